#include "core/model/moe_balance.h"

#include <torch/autograd.h>
#include <torch/custom_class.h>

#include <cmath>

namespace lt {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Over capacity, which selections stay: the `capacity` of highest weight
// (probability) or of earliest token (position) per expert.
at::Tensor within_capacity(const at::Tensor& experts, const at::Tensor& weights, const MoeConfig& c) {
  const int64_t n = experts.numel(), tokens = experts.size(0);
  const auto capacity = static_cast<int64_t>(std::ceil(c.capacity_factor * tokens * c.top_k / c.experts));
  const auto flat = experts.reshape(-1);
  auto order = c.drop_policy == DropPolicy::probability ? at::argsort(weights.detach().reshape(-1), true, 0, true)
                                                        : at::arange(n, flat.options());
  order = order.index_select(0, at::argsort(flat.index_select(0, order), true));  // by expert, by priority within
  const auto sorted = flat.index_select(0, order);
  const auto counts = count_per_expert(flat, c.experts);
  const auto starts = counts.cumsum(0) - counts;
  const auto rank = at::arange(n, flat.options()) - starts.index_select(0, sorted);
  return at::zeros({n}, flat.options().dtype(at::kBool)).index_put_({order}, rank < capacity).view_as(experts);
}

// sum(x * w()) with w read again in backward: a constant of the loss that
// may have grown in between (global_batch's counts).
struct LazyWeightedSum : torch::autograd::Function<LazyWeightedSum> {
  using Weights = std::function<at::Tensor()>;
  struct Holder : torch::CustomClassHolder {
    Weights weights;
  };
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, c10::intrusive_ptr<Holder> holder) {
    ctx->saved_data["weights"] = c10::IValue::make_capsule(holder);
    return (x * holder->weights()).sum();
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto holder = c10::static_intrusive_pointer_cast<Holder>(ctx->saved_data["weights"].toCapsule());
    return {grads[0] * holder->weights(), at::Tensor()};
  }
};

// The layer's output, unchanged, carrying `loss` into backward: the loss
// gets a gradient of one (it is already in units of the global-batch loss).
struct AttachLoss : torch::autograd::Function<AttachLoss> {
  // `loss`: a float scalar.
  static at::Tensor forward(AutogradContext*, const at::Tensor& out, const at::Tensor& /*loss*/) {
    return out.view_as(out);
  }
  static variable_list backward(AutogradContext*, variable_list grads) {
    return {grads[0], at::ones({}, grads[0].options().dtype(at::kFloat))};
  }
};

}  // namespace

at::Tensor count_per_expert(const at::Tensor& experts, int64_t n) {
  const auto flat = experts.reshape(-1);
  return at::zeros({n}, flat.options().dtype(at::kLong)).scatter_add_(0, flat, at::ones_like(flat, at::kLong));
}

Routing route(const at::Tensor& logits, const MoeConfig& c) {
  Routing r;
  r.logits = logits;
  r.probs = at::softmax(logits.to(at::kFloat), -1);
  auto [top, chosen] = r.probs.topk(c.top_k, -1);
  r.experts = chosen;
  r.weights = c.normalize_top_k ? top / top.sum(-1, true) : top;
  r.kept = c.capacity_factor > 0 ? within_capacity(chosen, top, c) : at::ones_like(chosen, at::kBool);
  return r;
}

struct MoeBalance::Slot {
  at::Tensor counts;   // this rank's selections per expert ([rows, experts] under sequence balance)
  at::Tensor reduced;  // summed over the scope's ranks
  at::Tensor psum;     // this rank's router probabilities summed over its tokens, detached
  at::Tensor z;        // the sum of squared log-partitions, when there is a z-loss
  at::Tensor dropped;  // selections over capacity
  int64_t selections = 0;
};

MoeBalance::MoeBalance(const ModelConfig& model, Sum over_sequence, Sum over_batch)
    : config_(model.moe), num_layers_(model.num_layers), over_sequence_(std::move(over_sequence)),
      over_batch_(std::move(over_batch)) {}

void MoeBalance::begin_step(int64_t tokens, int64_t sequences, int64_t micro_batches) {
  slots_.clear();
  in_step_ = true;
  micro_ = 0;
  tokens_ = static_cast<double>(std::max<int64_t>(1, tokens));
  sequences_ = static_cast<double>(std::max<int64_t>(1, sequences));
  micro_batches_ = static_cast<double>(std::max<int64_t>(1, micro_batches));
}

void MoeBalance::record(int64_t layer, const Routing& r, int64_t rows, const at::Tensor& psum, const at::Tensor& z) {
  auto& held = slots_[{layer, micro_}];
  if (held) return;  // recomputation: as the forward found it
  held = std::make_shared<Slot>();
  auto& s = *held;
  at::NoGradGuard no_grad;
  const int64_t experts = config_.experts;
  // Everything stays on the device: the layer never waits for it.
  if (config_.balance == BalanceScope::sequence) {
    const auto chosen = r.experts.reshape({rows, -1});
    s.counts =
        at::zeros({rows, experts}, psum.options()).scatter_add_(1, chosen, at::ones_like(chosen, psum.options()));
  } else {
    s.counts = count_per_expert(r.experts, experts).to(at::kFloat);
  }
  s.psum = psum.detach();
  s.reduced = s.counts.clone();
  const Sum& scope = config_.balance == BalanceScope::global_batch ? over_batch_ : over_sequence_;
  if (scope) scope(s.reduced);
  s.selections = r.kept.numel();
  s.dropped = r.kept.logical_not().sum();
  if (z.defined()) s.z = z.detach();
}

// d(balance loss)/d(psum): coef * E * f / T, f and T over the scope.
at::Tensor MoeBalance::balance_weights(int64_t layer, const Slot& s) const {
  const double scale = config_.balance_coef * static_cast<double>(config_.experts);
  const double k = static_cast<double>(config_.top_k);
  if (config_.balance == BalanceScope::global_batch) {
    at::Tensor total = at::zeros_like(s.reduced);
    for (auto it = slots_.lower_bound({layer, 0}); it != slots_.end() && it->first.first == layer; ++it)
      total += it->second->reduced;
    return total / total.sum().clamp_min(1) * (scale / tokens_);
  }
  const auto per = s.reduced.sum(-1, true).clamp_min(1);  // k x the tokens of each micro-batch or sequence
  const double groups = config_.balance == BalanceScope::sequence ? sequences_ : micro_batches_;
  return s.reduced / per / (per / k) * (scale / groups);
}

at::Tensor MoeBalance::attach(int64_t layer, const at::Tensor& out, const Routing& r, int64_t rows) {
  if (!in_step_) return out;
  // The router probabilities summed over this rank's tokens (per sequence
  // under sequence balance), and the sum of squared log-partitions.
  const auto psum =
      config_.balance == BalanceScope::sequence ? r.probs.view({rows, -1, config_.experts}).sum(1) : r.probs.sum(0);
  const auto z = config_.z_loss_coef > 0 ? at::logsumexp(r.logits.to(at::kFloat), -1).pow(2).sum() : at::Tensor();
  record(layer, r, rows, psum, z);
  if (!at::GradMode::is_enabled()) return out;  // a forward whose graph is not kept (checkpointing)
  auto loss = at::zeros({}, out.options().dtype(at::kFloat));
  if (config_.balance_coef > 0) {
    auto holder = c10::make_intrusive<LazyWeightedSum::Holder>();
    const auto key = std::make_pair(layer, micro_);
    holder->weights = [this, layer, key, device = psum.device()] {
      return balance_weights(layer, *slots_.at(key)).to(device);
    };
    loss = loss + LazyWeightedSum::apply(psum, holder);
  }
  if (z.defined()) loss = loss + z * (config_.z_loss_coef / tokens_);
  return AttachLoss::apply(out, loss);
}

MoeStepStats MoeBalance::end_step(const Sum& over_world) {
  // One sum over every rank: [balance, z, selections, dropped, counts of every layer].
  const int64_t experts = config_.experts;
  auto packed = at::zeros({4 + num_layers_ * experts}, at::kDouble);
  auto counts = packed.narrow(0, 4, num_layers_ * experts).view({num_layers_, experts});
  for (const auto& [key, s] : slots_) {
    packed[0] += (balance_weights(key.first, *s) * s->psum).sum().item<double>();
    if (s->z.defined()) packed[1] += s->z.item<double>() * config_.z_loss_coef / tokens_;
    packed[2] += static_cast<double>(s->selections);
    packed[3] += s->dropped.item<double>();
    counts[key.first] += (s->counts.dim() == 2 ? s->counts.sum(0) : s->counts).to(at::kCPU, at::kDouble);
  }
  slots_.clear();
  in_step_ = false;
  MoeStepStats stats;
  stats.selections = counts.clone();
  if (over_world) over_world(packed);
  stats.balance_loss = packed[0].item<double>();
  stats.z_loss = packed[1].item<double>();
  stats.dropped = packed[2].item<double>() > 0 ? packed[3].item<double>() / packed[2].item<double>() : 0;
  std::vector<at::Tensor> loads;
  for (int64_t layer = 0; layer < num_layers_; ++layer)
    if (config_.is_moe_layer(layer)) loads.push_back(counts[layer] / counts[layer].mean().clamp_min(1e-12));
  if (loads.empty()) return stats;
  const auto all = at::stack(loads);
  stats.load_min = all.min().item<double>();
  stats.load_max = all.max().item<double>();
  stats.load_cv = all.std(1, /*unbiased=*/false).mean().item<double>();
  return stats;
}

}  // namespace lt
