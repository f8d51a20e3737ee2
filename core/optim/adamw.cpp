#include "core/optim/adamw.h"

#include <algorithm>

#include "core/util/error.h"
#include "core/util/trace.h"

namespace lt {

at::Tensor ParamSegment::grad() const {
  if (main_grad.defined()) return main_grad;
  const auto& g = param.grad();
  return g.defined() ? g.view(-1).narrow(0, start, size()) : g;
}

std::vector<ParamSegment> whole(const std::vector<NamedParameter>& params) {
  std::vector<ParamSegment> out;
  for (const auto& p : params) out.push_back({p.name, p.tensor, 0, p.tensor.numel(), p.tensor.sizes().vec(), {}, {}});
  return out;
}

std::optional<ParamSegment> segment_within(const NamedParameter& p, int64_t offset, int64_t lo, int64_t hi) {
  const int64_t start = std::max(lo, offset), end = std::min(hi, offset + p.tensor.numel());
  if (start >= end) return std::nullopt;
  return ParamSegment{p.name, p.tensor, start - offset, end - offset, p.tensor.sizes().vec(), {}, {}};
}

std::optional<ParamSegment> shard_segment(const NamedParameter& p, const std::vector<int64_t>& shape, int64_t offset,
                                          int64_t lo, int64_t hi, const at::Tensor& values, const at::Tensor& grads) {
  const int64_t start = std::max(lo, offset), end = std::min(hi, offset + c10::multiply_integers(shape));
  if (start >= end) return std::nullopt;
  return ParamSegment{p.name,
                      p.tensor,
                      start - offset,
                      end - offset,
                      shape,
                      values.narrow(0, start - lo, end - start),
                      grads.narrow(0, start - lo, end - start)};
}

bool takes_weight_decay(const std::string& name, int64_t dims) {
  const bool bias = name.size() >= 5 && name.compare(name.size() - 5, 5, ".bias") == 0;
  return !bias && name.find("norm") == std::string::npos && dims >= 2;
}

AdamW::AdamW(std::vector<ParamSegment> segments, AdamWOptions options) : options_(options) {
  for (auto& s : segments) {
    LT_CHECK(s.master.defined() || s.param.is_contiguous(), "AdamW: parameter '" + s.name + "' must be contiguous");
    const bool decay = takes_weight_decay(s.name, static_cast<int64_t>(s.shape.size()));
    auto zeros = at::zeros({s.size()}, s.values().options().dtype(at::kFloat));
    slots_.push_back({std::move(s), decay, zeros, zeros.clone()});
  }
}

void AdamW::zero_grad() {
  for (auto& s : slots_)
    if (auto g = s.segment.grad(); g.defined()) g.zero_();
}

// Each (device, decay) group goes through ATen's fused AdamW, the kernel of
// torch.optim.AdamW(fused=True): one pass over memory per element,
// vectorised and multi-threaded on the host (14x the separate ATen ops on
// 50M elements), one launch per group on CUDA.
void AdamW::update(size_t first, size_t last, double lr) {
  LT_TRACE_SCOPE("optimizer");
  struct Group {
    at::Device device;
    bool decay;
    std::vector<at::Tensor> params, grads, exp_avgs, exp_avg_sqs;
  };
  std::vector<Group> groups;
  for (size_t i = first; i < last; ++i) {
    auto& s = slots_[i];
    const auto g = s.segment.grad();
    if (!g.defined()) continue;
    const auto device = s.exp_avg.device();
    auto group = std::find_if(groups.begin(), groups.end(),
                              [&](const Group& x) { return x.device == device && x.decay == s.decay; });
    if (group == groups.end()) group = groups.insert(groups.end(), Group{device, s.decay, {}, {}, {}, {}});
    group->params.push_back(s.segment.values());
    group->grads.push_back(g);
    group->exp_avgs.push_back(s.exp_avg);
    group->exp_avg_sqs.push_back(s.exp_avg_sq);
  }
  at::NoGradGuard no_grad;
  for (auto& group : groups) {
    // The kernel reads each tensor's step count; it does not advance it.
    const auto step =
        at::full({}, static_cast<double>(steps_), at::TensorOptions().dtype(at::kFloat).device(group.device));
    const std::vector<at::Tensor> steps(group.params.size(), step);
    at::_fused_adamw_(group.params, group.grads, group.exp_avgs, group.exp_avg_sqs, {}, steps, lr, options_.beta1,
                      options_.beta2, group.decay ? options_.weight_decay : 0.0, options_.eps, /*amsgrad=*/false,
                      /*maximize=*/false);
  }
}

void AdamW::save(size_t first, size_t last, std::vector<at::Tensor>& into) const {
  if (into.empty())
    for (size_t i = first; i < last; ++i)
      for (const auto& t : changed(slots_[i])) into.push_back(at::empty_like(t));
  size_t k = 0;
  for (size_t i = first; i < last; ++i)
    for (const auto& t : changed(slots_[i])) into[k++].copy_(t);
}

void AdamW::restore(size_t first, size_t last, const std::vector<at::Tensor>& from) {
  at::NoGradGuard no_grad;
  size_t k = 0;
  for (size_t i = first; i < last; ++i)
    for (auto t : changed(slots_[i])) t.copy_(from[k++]);
}

std::vector<AdamW::SegmentState> AdamW::state() const {
  std::vector<SegmentState> out;
  for (const auto& s : slots_) out.push_back({s.segment, s.exp_avg, s.exp_avg_sq});
  return out;
}

void AdamW::load_state(const StateReader& read, int64_t steps) {
  at::NoGradGuard no_grad;
  for (auto& s : slots_) {
    const auto& seg = s.segment;
    read(seg.name, "exp_avg", seg.start, seg.end, s.exp_avg);
    read(seg.name, "exp_avg_sq", seg.start, seg.end, s.exp_avg_sq);
  }
  steps_ = steps;
}

}  // namespace lt
