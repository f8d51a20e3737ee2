// A mixture-of-experts MLP, named as transformers' Qwen-MoE modules are
// (mlp.gate, mlp.experts.{gate_up_proj,down_proj}, mlp.shared_expert.*,
// mlp.shared_expert_gate; core/hf/hf_names.h maps checkpoints' per-expert
// tensors onto them). The router picks top_k experts per token
// (moe_balance.h: route); the selections are sorted by expert once and the
// experts run as two grouped matrix products over the sorted rows
// (dropless, or within each expert's capacity); their outputs, weighted,
// return to the tokens; a shared expert, gated per token, sees every token.
// The balance and z losses ride on the output (MoeBalance::attach). With
// expert parallelism each rank holds 1/ep of the experts: the rows for the
// others travel to their ranks and back (two uneven all-to-alls).
//
// Without expert parallelism a layer never waits for the device: the
// groups' sizes stay on it as the products' offsets. With it, the host
// learns the sizes once per layer, from this rank's counts and the
// all-to-all of counts that sizes the exchange.
#pragma once
#include <torch/nn/module.h>

#include <memory>

#include "core/config/config.h"
#include "core/model/mlp.h"
#include "core/model/model_shard.h"
#include "core/model/moe_balance.h"

namespace lt {

// A layer's (or an ep rank's share of its) SwiGLU experts, stacked.
class ExpertsImpl : public torch::nn::Module {
 public:
  ExpertsImpl(int64_t experts, int64_t hidden, int64_t columns, std::shared_ptr<ComputeWeights> compute);
  // `rows` grouped by expert; ends[e] (int32, on rows' device): where expert
  // e's rows end. Rows after the last end are left uncomputed (undefined).
  at::Tensor forward(const at::Tensor& rows, const at::Tensor& ends);

  at::Tensor gate_up_proj;  // [experts, 2 * columns, hidden]: each expert's gate rows, then its up rows
  at::Tensor down_proj;     // [experts, hidden, columns]

 private:
  std::shared_ptr<ComputeWeights> compute_;
};
TORCH_MODULE(Experts);

class SparseMoeImpl : public torch::nn::Module {
 public:
  SparseMoeImpl(const ModelConfig& config, const ModelShard& shard, int64_t layer);
  at::Tensor forward(const at::Tensor& x);  // [batch, seq, hidden]

  Linear gate{nullptr};
  Experts experts{nullptr};         // this rank's
  LlamaMLP shared_expert{nullptr};  // null without one
  Linear shared_expert_gate{nullptr};

 private:
  at::Tensor run_experts(const at::Tensor& x, const Routing& routing);
  at::Tensor on_expert_ranks(const at::Tensor& rows, const at::Tensor& counts);

  MoeConfig config_;
  ModelShard shard_;
  int64_t layer_;
};
TORCH_MODULE(SparseMoe);

}  // namespace lt
