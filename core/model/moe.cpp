#include "core/model/moe.h"

namespace lt {

ExpertsImpl::ExpertsImpl(int64_t experts, int64_t hidden, int64_t columns, std::shared_ptr<ComputeWeights> compute)
    : compute_(std::move(compute)) {
  gate_up_proj = register_parameter("gate_up_proj", at::empty({experts, 2 * columns, hidden}));
  down_proj = register_parameter("down_proj", at::empty({experts, hidden, columns}));
}

// One grouped product per projection, every expert at once. An expert
// with no rows still takes part (its gradient is zero), so data
// parallelism's buckets fill alike on every rank.
at::Tensor ExpertsImpl::forward(const at::Tensor& rows, const at::Tensor& ends) {
  const auto gate_up = at::_grouped_mm(rows, compute_weight(compute_, gate_up_proj).transpose(1, 2), ends);
  const auto halves = gate_up.chunk(2, -1);
  return at::_grouped_mm(at::silu(halves[0]) * halves[1], compute_weight(compute_, down_proj).transpose(1, 2), ends);
}

SparseMoeImpl::SparseMoeImpl(const ModelConfig& c, const ModelShard& shard, int64_t layer)
    : config_(c.moe), shard_(shard), layer_(layer) {
  const auto& m = c.moe;
  // The router computes in fp32 whatever the compute dtype: bf16 logits
  // would tie and flip top-k choices on rounding (Megatron's fp32 router).
  gate = register_module("gate", Linear(c.hidden_size, m.experts, false, nullptr));
  experts =
      register_module("experts", Experts(m.experts / shard.ep_size, c.hidden_size, c.expert_columns(), shard.compute));
  if (m.shared_expert_intermediate_size > 0) {
    shared_expert =
        register_module("shared_expert", LlamaMLP(c.hidden_size, m.shared_expert_intermediate_size, shard.compute));
    shared_expert_gate = register_module("shared_expert_gate", Linear(c.hidden_size, 1, false, shard.compute));
  }
}

// Rows sorted by expert, counts[e] of them for global expert e (any further
// rows are dropped ones), run on the ranks holding their experts; the
// outputs come back in the rows' order, zero for the dropped rows.
at::Tensor SparseMoeImpl::on_expert_ranks(const at::Tensor& rows, const at::Tensor& counts) {
  const int64_t ranks = shard_.ep_size, local = config_.experts / ranks;
  if (ranks == 1) return experts(rows, counts.cumsum(0).to(at::kInt));
  // The exchange's sizes: this rank's counts, then every rank's, by one
  // all-to-all of counts (the layer's one wait for the device).
  const auto host = counts.cpu();
  const std::vector<int64_t> per_expert(host.data_ptr<int64_t>(), host.data_ptr<int64_t>() + host.numel());
  const std::vector<int64_t> arriving = shard_.exchange_counts(per_expert);
  std::vector<int64_t> send_rows(ranks, 0), recv_rows(ranks, 0), mine(local, 0);
  int64_t kept = 0;
  for (int64_t j = 0; j < ranks; ++j)
    for (int64_t l = 0; l < local; ++l) {
      send_rows[j] += per_expert[j * local + l];
      recv_rows[j] += arriving[j * local + l];
      mine[l] += arriving[j * local + l];
      kept += per_expert[j * local + l];
    }
  const auto arrived = shard_.exchange(rows.narrow(0, 0, kept), send_rows, recv_rows);
  // The arrivals come by source, each sorted by expert: regroup by expert.
  std::vector<int64_t> order, ends(local);
  std::vector<int64_t> block_start(ranks * local);
  for (int64_t j = 0, at = 0; j < ranks; ++j)
    for (int64_t l = 0; l < local; ++l) block_start[j * local + l] = at, at += arriving[j * local + l];
  for (int64_t l = 0; l < local; ++l)
    for (int64_t j = 0; j < ranks; ++j)
      for (int64_t r = 0; r < arriving[j * local + l]; ++r) order.push_back(block_start[j * local + l] + r);
  for (int64_t l = 0, end = 0; l < local; ++l) ends[l] = end += mine[l];
  const auto index = at::tensor(order, at::kLong).to(rows.device());
  const auto out = experts(arrived.index_select(0, index), at::tensor(ends, at::kLong).to(rows.device(), at::kInt));
  const auto back = shard_.exchange(at::zeros_like(out).index_copy(0, index, out), recv_rows, send_rows);
  if (kept == rows.size(0)) return back;
  return at::cat({back, at::zeros({rows.size(0) - kept, back.size(1)}, back.options())});
}

// The selections sorted by expert once (stable: token order within), those
// over capacity after every expert's; the outputs weighted and summed back
// into their tokens.
at::Tensor SparseMoeImpl::run_experts(const at::Tensor& x, const Routing& r) {
  const int64_t k = r.experts.size(1), n = config_.experts;
  const bool drops = config_.capacity_factor > 0;
  auto expert = r.experts.reshape(-1);
  if (drops) expert = expert.masked_fill(r.kept.reshape(-1).logical_not(), n);
  const auto order = at::argsort(expert, /*stable=*/true);
  const auto token = at::floor_divide(order, k);
  const auto weight = r.weights.reshape(-1).index_select(0, order).unsqueeze(1);
  auto rows = x.index_select(0, token);
  // A dropped row is computed by no expert: its output and its input's
  // gradient are undefined memory. `where` zeroes both (a product with a
  // zero weight would carry a NaN there into the gradients).
  const auto valid = drops ? expert.index_select(0, order).lt(n).unsqueeze(1) : at::Tensor();
  if (drops) rows = at::where(valid, rows, at::zeros({}, rows.options()));
  auto out = on_expert_ranks(rows, count_per_expert(expert, n + 1).narrow(0, 0, n));
  if (drops) out = at::where(valid, out, at::zeros({}, out.options()));
  return at::zeros_like(x).index_add(0, token, out * weight.to(x.scalar_type()));
}

at::Tensor SparseMoeImpl::forward(const at::Tensor& x) {
  const auto flat = x.reshape({-1, x.size(-1)});
  // The router in fp32 whatever its weight's dtype (bf16 in an offloaded chunk).
  const Routing routing = route(at::linear(flat.to(at::kFloat), gate->weight.to(at::kFloat)), config_);
  auto out = run_experts(flat, routing);
  if (shared_expert) out = out + at::sigmoid(shared_expert_gate(flat)) * shared_expert(flat);
  return shard_.moe->attach(layer_, out, routing, x.size(0)).view_as(x);
}

}  // namespace lt
