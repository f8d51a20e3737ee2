#include "core/optim/gradient_hooks.h"

#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>

#include <algorithm>
#include <unordered_map>
#include <vector>

namespace lt {
namespace {

class AccumulatedHook : public torch::autograd::FunctionPostHook {
 public:
  explicit AccumulatedHook(std::function<void()> callback) : callback_(std::move(callback)) {}
  torch::autograd::variable_list operator()(const torch::autograd::variable_list& outputs,
                                            const torch::autograd::variable_list&) override {
    callback_();
    return outputs;
  }

 private:
  std::function<void()> callback_;
};

}  // namespace

// Each hook on the accumulator its parameter had when it was added or last
// followed.
struct GradientHooks::Added {
  struct Hook {
    at::Tensor param;
    std::function<void()> callback;
    std::shared_ptr<torch::autograd::Node> accumulator;
    torch::autograd::FunctionPostHook* hook;
  };
  std::vector<Hook> hooks;
  std::unordered_map<const c10::TensorImpl*, std::vector<size_t>> of_param;

  void attach(Hook& h) {
    h.accumulator = torch::autograd::impl::grad_accumulator(h.param);
    auto hook = std::make_unique<AccumulatedHook>(h.callback);
    h.hook = hook.get();
    h.accumulator->add_post_hook(std::move(hook));
  }
  static void detach(const Hook& h) {
    auto& hooks = h.accumulator->post_hooks();
    hooks.erase(std::remove_if(hooks.begin(), hooks.end(), [&](const auto& p) { return p.get() == h.hook; }),
                hooks.end());
  }
};

GradientHooks::GradientHooks() : added_(std::make_unique<Added>()) {}

// The parameters may outlive us: take exactly our hooks off.
GradientHooks::~GradientHooks() {
  for (const auto& h : added_->hooks) Added::detach(h);
}

void GradientHooks::add(const at::Tensor& param, std::function<void()> callback) {
  auto& h = added_->hooks.emplace_back(Added::Hook{param, std::move(callback), nullptr, nullptr});
  added_->attach(h);
  added_->of_param[param.unsafeGetTensorImpl()].push_back(added_->hooks.size() - 1);
}

void GradientHooks::follow(const at::Tensor& param) {
  const auto found = added_->of_param.find(param.unsafeGetTensorImpl());
  if (found == added_->of_param.end()) return;
  for (size_t i : found->second) {
    auto& h = added_->hooks[i];
    if (torch::autograd::impl::grad_accumulator(param) == h.accumulator) continue;
    Added::detach(h);
    added_->attach(h);
  }
}

void GradientHooks::renew(const at::Tensor& param) {
  torch::autograd::impl::get_autograd_meta(param)->grad_accumulator_.reset();
  follow(param);
}

}  // namespace lt
