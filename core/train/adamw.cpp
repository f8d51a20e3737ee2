#include "core/train/adamw.h"

#include <cmath>

#include "core/util/error.h"

namespace lt {

bool takes_weight_decay(const std::string& name, const at::Tensor& p) {
  const bool bias = name.size() >= 5 && name.compare(name.size() - 5, 5, ".bias") == 0;
  return !bias && name.find("norm") == std::string::npos && p.dim() >= 2;
}

AdamW::AdamW(std::vector<NamedParameter> params, AdamWOptions options) : options_(options) {
  for (auto& p : params) {
    const bool decay = takes_weight_decay(p.name, p.tensor);
    auto zeros = at::zeros_like(p.tensor, at::MemoryFormat::Contiguous);
    slots_.push_back({std::move(p), decay, zeros, zeros.clone()});
  }
}

void AdamW::zero_grad() {
  for (auto& s : slots_)
    if (s.param.tensor.grad().defined()) s.param.tensor.mutable_grad().zero_();
}

void AdamW::step(double lr) {
  ++steps_;
  const double bias1 = 1.0 - std::pow(options_.beta1, steps_);
  const double bias2 = 1.0 - std::pow(options_.beta2, steps_);
  const double step_size = lr / bias1;
  at::NoGradGuard no_grad;
  for (auto& s : slots_) {
    auto& p = s.param.tensor;
    if (!p.grad().defined()) continue;
    const auto& g = p.grad();
    if (s.decay && options_.weight_decay != 0) p.mul_(1.0 - lr * options_.weight_decay);
    s.exp_avg.mul_(options_.beta1).add_(g, 1.0 - options_.beta1);
    s.exp_avg_sq.mul_(options_.beta2).addcmul_(g, g, 1.0 - options_.beta2);
    auto denom = (s.exp_avg_sq.sqrt() / std::sqrt(bias2)).add_(options_.eps);
    p.addcdiv_(s.exp_avg, denom, -step_size);
  }
}

std::vector<std::pair<std::string, at::Tensor>> AdamW::state() const {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& s : slots_) {
    out.emplace_back(s.param.name + ".exp_avg", s.exp_avg);
    out.emplace_back(s.param.name + ".exp_avg_sq", s.exp_avg_sq);
  }
  return out;
}

void AdamW::load_state(const std::map<std::string, at::Tensor>& state, int64_t steps) {
  at::NoGradGuard no_grad;
  for (auto& s : slots_) {
    for (auto [suffix, target] : {std::pair{".exp_avg", &s.exp_avg}, std::pair{".exp_avg_sq", &s.exp_avg_sq}}) {
      auto it = state.find(s.param.name + suffix);
      if (it == state.end()) fail("optimizer state has no '" + s.param.name + suffix + "': the checkpoint is from another model");
      if (!it->second.sizes().equals(target->sizes()))
        fail("optimizer state '" + s.param.name + suffix + "' has another shape: the checkpoint is from another model");
      target->copy_(it->second);
    }
  }
  steps_ = steps;
}

}  // namespace lt
