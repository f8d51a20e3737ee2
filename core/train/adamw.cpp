#include "core/train/adamw.h"

#include <algorithm>
#include <cmath>

#include "core/util/error.h"

namespace lt {

at::Tensor ParamSegment::grad() const {
  const auto& g = param.grad();
  return g.defined() ? g.view(-1).narrow(0, start, size()) : g;
}

std::vector<ParamSegment> whole(const std::vector<NamedParameter>& params) {
  std::vector<ParamSegment> out;
  for (const auto& p : params) out.push_back({p.name, p.tensor, 0, p.tensor.numel()});
  return out;
}

std::optional<ParamSegment> segment_within(const NamedParameter& p, int64_t offset, int64_t lo, int64_t hi) {
  const int64_t start = std::max(lo, offset), end = std::min(hi, offset + p.tensor.numel());
  if (start >= end) return std::nullopt;
  return ParamSegment{p.name, p.tensor, start - offset, end - offset};
}

bool takes_weight_decay(const std::string& name, const at::Tensor& p) {
  const bool bias = name.size() >= 5 && name.compare(name.size() - 5, 5, ".bias") == 0;
  return !bias && name.find("norm") == std::string::npos && p.dim() >= 2;
}

AdamW::AdamW(std::vector<ParamSegment> segments, AdamWOptions options) : options_(options) {
  for (auto& s : segments) {
    check(s.param.is_contiguous(), "AdamW: parameter '" + s.name + "' must be contiguous");
    const bool decay = takes_weight_decay(s.name, s.param);
    auto zeros = at::zeros({s.size()}, s.param.options().dtype(at::kFloat));
    slots_.push_back({std::move(s), decay, zeros, zeros.clone()});
  }
}

void AdamW::zero_grad() {
  for (auto& s : slots_)
    if (s.segment.param.grad().defined()) s.segment.param.mutable_grad().zero_();
}

void AdamW::step(double lr) {
  ++steps_;
  const double bias1 = 1.0 - std::pow(options_.beta1, steps_);
  const double bias2 = 1.0 - std::pow(options_.beta2, steps_);
  const double step_size = lr / bias1;
  at::NoGradGuard no_grad;
  for (auto& s : slots_) {
    const auto g = s.segment.grad();
    if (!g.defined()) continue;
    auto p = s.segment.values();
    if (s.decay && options_.weight_decay != 0) p.mul_(1.0 - lr * options_.weight_decay);
    s.exp_avg.mul_(options_.beta1).add_(g, 1.0 - options_.beta1);
    s.exp_avg_sq.mul_(options_.beta2).addcmul_(g, g, 1.0 - options_.beta2);
    auto denom = (s.exp_avg_sq.sqrt() / std::sqrt(bias2)).add_(options_.eps);
    p.addcdiv_(s.exp_avg, denom, -step_size);
  }
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
    s.exp_avg.copy_(read(seg.name, "exp_avg", seg.start, seg.end));
    s.exp_avg_sq.copy_(read(seg.name, "exp_avg_sq", seg.start, seg.end));
  }
  steps_ = steps;
}

}  // namespace lt
