#include "core/model/moe.h"

namespace lt {

SparseMoeImpl::SparseMoeImpl(const ModelConfig& c, const ModelShard& shard, int64_t layer)
    : config_(c.moe), shard_(shard), layer_(layer) {
  const auto& m = c.moe;
  const int64_t columns = m.expert_intermediate_size > 0 ? m.expert_intermediate_size : c.intermediate_size;
  // The router computes in fp32 whatever the compute dtype: bf16 logits
  // would tie and flip top-k choices on rounding (Megatron's fp32 router).
  gate = register_module("gate", Linear(c.hidden_size, m.experts, false, nullptr));
  const int64_t local = m.experts / shard.ep_size;
  std::vector<std::pair<std::string, std::shared_ptr<torch::nn::Module>>> mine;
  for (int64_t e = shard.ep_rank * local; e < (shard.ep_rank + 1) * local; ++e)
    mine.emplace_back(std::to_string(e), LlamaMLP(c.hidden_size, columns, shard.compute).ptr());
  experts = register_module("experts", torch::nn::ModuleDict(mine));
  if (m.shared_expert_intermediate_size > 0) {
    shared_expert =
        register_module("shared_expert", LlamaMLP(c.hidden_size, m.shared_expert_intermediate_size, shard.compute));
    shared_expert_gate = register_module("shared_expert_gate", Linear(c.hidden_size, 1, false, shard.compute));
  }
}

// This rank's experts, each on its run of `rows` (per_expert[i] rows for
// the i-th). Every expert runs, on no rows if none came, so every expert
// has a gradient and data parallelism's buckets complete in the same order
// on every rank.
at::Tensor SparseMoeImpl::run_local(const at::Tensor& rows, const std::vector<int64_t>& per_expert) {
  std::vector<at::Tensor> outputs;
  int64_t start = 0, i = 0;
  for (const auto& expert : experts->values()) {
    outputs.push_back(expert->as<LlamaMLP>()->forward(rows.narrow(0, start, per_expert[i])));
    start += per_expert[i++];
  }
  return at::cat(outputs);
}

// Rows sorted by expert (per_expert: rows of each global expert) go to the
// ranks holding their experts, run there, and come back in their order.
at::Tensor SparseMoeImpl::on_expert_ranks(const at::Tensor& rows, const std::vector<int64_t>& per_expert) {
  const int64_t ranks = shard_.ep_size, local = config_.experts / ranks;
  if (ranks == 1) return run_local(rows, per_expert);
  // What each rank sends to each other, per expert of the receiver.
  const std::vector<int64_t> arriving = shard_.exchange_counts(per_expert);
  std::vector<int64_t> send_rows(ranks, 0), recv_rows(ranks, 0), mine(local, 0);
  for (int64_t j = 0; j < ranks; ++j)
    for (int64_t l = 0; l < local; ++l) {
      send_rows[j] += per_expert[j * local + l];
      recv_rows[j] += arriving[j * local + l];
      mine[l] += arriving[j * local + l];
    }
  const auto arrived = shard_.exchange(rows, send_rows, recv_rows);
  // The arrivals come by source, each sorted by expert: regroup by expert.
  std::vector<int64_t> order;
  std::vector<int64_t> block_start(ranks * local);
  for (int64_t j = 0, at = 0; j < ranks; ++j)
    for (int64_t l = 0; l < local; ++l) block_start[j * local + l] = at, at += arriving[j * local + l];
  for (int64_t l = 0; l < local; ++l)
    for (int64_t j = 0; j < ranks; ++j)
      for (int64_t r = 0; r < arriving[j * local + l]; ++r) order.push_back(block_start[j * local + l] + r);
  const auto index = at::tensor(order, at::TensorOptions().dtype(at::kLong)).to(rows.device());
  const auto out = run_local(arrived.index_select(0, index), mine);
  return shard_.exchange(at::zeros_like(out).index_copy(0, index, out), recv_rows, send_rows);
}

// Selections grouped by expert (stable: token order within), run where
// their experts live, the outputs weighted and summed back into their tokens.
at::Tensor SparseMoeImpl::run_experts(const at::Tensor& x, const Routing& r) {
  const int64_t k = r.experts.size(1);
  const auto kept = r.kept.reshape(-1).nonzero().squeeze(1);
  auto expert = r.experts.reshape(-1).index_select(0, kept);
  auto token = at::arange(x.size(0), expert.options()).repeat_interleave(k).index_select(0, kept);
  auto weight = r.weights.reshape(-1).index_select(0, kept);
  const auto order = at::argsort(expert, /*stable=*/true);
  token = token.index_select(0, order);
  weight = weight.index_select(0, order);
  const auto counts = at::bincount(expert, {}, config_.experts).cpu();
  const std::vector<int64_t> per_expert(counts.data_ptr<int64_t>(), counts.data_ptr<int64_t>() + counts.numel());
  const auto y = on_expert_ranks(x.index_select(0, token), per_expert) * weight.unsqueeze(1).to(x.scalar_type());
  return at::zeros_like(x).index_add(0, token, y);
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
