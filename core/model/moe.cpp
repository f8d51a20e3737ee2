#include "core/model/moe.h"

namespace lt {

SparseMoeImpl::SparseMoeImpl(const ModelConfig& c, int64_t layer, std::shared_ptr<MoeBalance> balance)
    : config_(c.moe), layer_(layer), balance_(std::move(balance)) {
  const auto& m = c.moe;
  const int64_t columns = m.expert_intermediate_size > 0 ? m.expert_intermediate_size : c.intermediate_size;
  gate = register_module("gate", torch::nn::Linear(torch::nn::LinearOptions(c.hidden_size, m.experts).bias(false)));
  experts = register_module("experts", torch::nn::ModuleList());
  for (int64_t e = 0; e < m.experts; ++e) experts->push_back(LlamaMLP(c.hidden_size, columns));
  if (m.shared_expert_intermediate_size > 0) {
    shared_expert = register_module("shared_expert", LlamaMLP(c.hidden_size, m.shared_expert_intermediate_size));
    shared_expert_gate =
        register_module("shared_expert_gate", torch::nn::Linear(torch::nn::LinearOptions(c.hidden_size, 1).bias(false)));
  }
}

// Selections grouped by expert (stable: token order within), each expert on
// its rows, the outputs weighted and summed back into their tokens. Every
// expert runs, on no rows if none chose it, so every expert has a gradient
// and data parallelism's buckets complete in the same order on every rank.
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
  const auto inputs = x.index_select(0, token);
  std::vector<at::Tensor> outputs;
  int64_t start = 0;
  for (int64_t e = 0; e < config_.experts; ++e) {
    const int64_t rows = counts[e].item<int64_t>();
    outputs.push_back(experts[e]->as<LlamaMLP>()->forward(inputs.narrow(0, start, rows)));
    start += rows;
  }
  const auto y = at::cat(outputs) * weight.unsqueeze(1).to(x.scalar_type());
  return at::zeros_like(x).index_add(0, token, y);
}

at::Tensor SparseMoeImpl::forward(const at::Tensor& x) {
  const auto flat = x.reshape({-1, x.size(-1)});
  const Routing routing = route(gate(flat), config_);
  auto out = run_experts(flat, routing);
  if (shared_expert) out = out + at::sigmoid(shared_expert_gate(flat)) * shared_expert(flat);
  return balance_->attach(layer_, out, routing, x.size(0)).view_as(x);
}

}  // namespace lt
