#include "offload/profiler/profiler.h"

#include <torch/csrc/autograd/grad_mode.h>

#include <chrono>

#include "core/optim/adamw.h"
#include "core/util/resources.h"
#include "offload/activations/checkpoint.h"
#include "offload/profiler/memory_tracker.h"

namespace lt {
namespace {

using Clock = std::chrono::steady_clock;

double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// Follows one profiled step: forward visits the layers first to last
// without autograd, then backward recomputes them last to first; a layer's
// backward lasts from the end of its recomputation to the start of the next
// one (the step's end for the first layer).
class Probe {
 public:
  Probe(Profile& profile, const at::Device& device) : p_(profile), device_(device), origin_(device_bytes(device)) {}

  void before(int64_t layer) {
    synchronize(device_);
    if (!torch::autograd::GradMode::is_enabled()) {
      if (p_.blocks.empty()) p_.base = in_use();
      p_.blocks.push_back({});
      p_.blocks.back().layer = layer;
    } else {
      close_backward();
      if (!in_backward_) p_.head_peak = device_peak_bytes(device_) - origin_, in_backward_ = true;
      auto& b = block(layer);
      b.start = in_use();
      reset_device_peak(device_);
      open_ = &b;
    }
    started_ = Clock::now();
  }

  void after(int64_t layer, const at::Tensor& x, const at::Tensor& y) {
    synchronize(device_);
    const double seconds = since(started_);
    auto& b = block(layer);
    if (!torch::autograd::GradMode::is_enabled()) {
      b.forward_s = seconds, b.input = x.nbytes(), b.output = y.nbytes();
      reset_device_peak(device_);  // the head's peak follows the last layer
    } else {
      b.recompute_s = seconds, b.kept = in_use() - b.start;
    }
    finished_ = Clock::now();
  }

  void close_backward() {
    if (!open_) return;
    synchronize(device_);
    open_->backward_s = since(finished_);
    open_->transient = device_peak_bytes(device_) - origin_ - open_->start;
    open_ = nullptr;
  }

 private:
  int64_t in_use() const { return device_bytes(device_) - origin_; }
  BlockProfile& block(int64_t layer) {
    for (auto& b : p_.blocks)
      if (b.layer == layer) return b;
    return p_.blocks.back();
  }

  Profile& p_;
  at::Device device_;
  int64_t origin_;
  Clock::time_point started_, finished_;
  BlockProfile* open_ = nullptr;
  bool in_backward_ = false;
};

}  // namespace

Profile profile_layers(LlamaForCausalLMImpl& model, const LayerFetch& fetch, const at::Device& device,
                       const std::function<void()>& step) {
  Profile profile;
  track_device_memory();
  synchronize(device);
  auto probe = std::make_shared<Probe>(profile, device);
  ScopedLayers own_runners(model);
  model.set_runners([&](int64_t layer) {
    LayerRunners r;
    r.layer = [probe, fetch, layer](const LayerPart& f, const at::Tensor& x) {
      return checkpoint(
          [probe, fetch, layer, f](const at::Tensor& t) {
            if (fetch) fetch(layer);  // the copy is the planner's to predict, not the layer's time
            probe->before(layer);
            auto y = f(t);
            probe->after(layer, t, y);
            return y;
          },
          x);
    };
    return r;
  });
  const auto start = Clock::now();
  step();
  probe->close_backward();
  double layers = 0;
  for (const auto& b : profile.blocks) layers += b.forward_s + b.recompute_s + b.backward_s;
  profile.other_s = std::max(0.0, since(start) - layers);
  return profile;
}

double measure_link(const at::Device& device, int64_t bytes) {
  const auto host = at::empty({bytes / 4}, at::TensorOptions().dtype(at::kFloat).pinned_memory(device.is_cuda()));
  auto there = at::empty_like(host, at::TensorOptions().device(device));
  double best = 0;
  for (int i = 0; i < 3; ++i) {
    synchronize(device);
    const auto t = Clock::now();
    there.copy_(host);
    host.copy_(there);
    synchronize(device);
    best = std::max(best, 2.0 * static_cast<double>(bytes) / since(t));
  }
  return best;
}

double measure_adamw(const at::Device& device) {
  const int64_t n = 1 << 22;
  auto param = at::zeros({n}, at::TensorOptions().device(device)).requires_grad_(true);
  param.mutable_grad() = at::ones_like(param);
  AdamW adamw(std::vector<NamedParameter>{{"probe.weight", param}}, AdamWOptions{});
  double best = 1e30;
  for (int i = 0; i < 3; ++i) {
    synchronize(device);
    const auto t = Clock::now();
    adamw.step(1e-3);
    synchronize(device);
    best = std::min(best, since(t));
  }
  return best / static_cast<double>(n);
}

}  // namespace lt
