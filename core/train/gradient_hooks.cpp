#include "core/train/gradient_hooks.h"

#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>

#include <algorithm>
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

struct GradientHooks::Added {
  std::vector<std::shared_ptr<torch::autograd::Node>> accumulators;
  std::vector<torch::autograd::FunctionPostHook*> hooks;
};

GradientHooks::GradientHooks() : added_(std::make_unique<Added>()) {}

GradientHooks::~GradientHooks() {
  // The parameters may outlive us: take exactly our hooks off.
  const auto& ours = added_->hooks;
  for (auto& accumulator : added_->accumulators) {
    auto& hooks = accumulator->post_hooks();
    hooks.erase(std::remove_if(hooks.begin(), hooks.end(),
                               [&](const auto& h) { return std::find(ours.begin(), ours.end(), h.get()) != ours.end(); }),
                hooks.end());
  }
}

void GradientHooks::add(const at::Tensor& param, std::function<void()> callback) {
  auto accumulator = torch::autograd::impl::grad_accumulator(param);
  auto hook = std::make_unique<AccumulatedHook>(std::move(callback));
  added_->hooks.push_back(hook.get());
  accumulator->add_post_hook(std::move(hook));
  added_->accumulators.push_back(std::move(accumulator));
}

}  // namespace lt
