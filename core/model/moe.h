// A mixture-of-experts MLP, named as Qwen2-MoE's so HF checkpoints map 1:1
// (mlp.gate, mlp.experts.N.{gate,up,down}_proj, mlp.shared_expert.*,
// mlp.shared_expert_gate). The router picks top_k experts per token
// (moe_balance.h: route), each expert runs on the tokens sent to it
// (dropless, or within its capacity), and their outputs, weighted, return
// to the tokens; a shared expert, gated per token, sees every token. The
// balance and z losses ride on the output (MoeBalance::attach). With expert
// parallelism each rank holds 1/ep of the experts: the rows for the others
// travel to their ranks and back (two uneven all-to-alls).
#pragma once
#include <torch/nn/module.h>
#include <torch/nn/modules/container/moduledict.h>

#include <memory>

#include "core/config/config.h"
#include "core/model/mlp.h"
#include "core/model/model_shard.h"
#include "core/model/moe_balance.h"

namespace lt {

class SparseMoeImpl : public torch::nn::Module {
 public:
  SparseMoeImpl(const ModelConfig& config, const ModelShard& shard, int64_t layer);
  at::Tensor forward(const at::Tensor& x);  // [batch, seq, hidden]

  Linear gate{nullptr};
  torch::nn::ModuleDict experts{nullptr};  // this rank's, by global index
  LlamaMLP shared_expert{nullptr};         // null without one
  Linear shared_expert_gate{nullptr};

 private:
  at::Tensor run_experts(const at::Tensor& x, const Routing& routing);
  at::Tensor on_expert_ranks(const at::Tensor& rows, const std::vector<int64_t>& per_expert);
  at::Tensor run_local(const at::Tensor& rows, const std::vector<int64_t>& per_expert);

  MoeConfig config_;
  ModelShard shard_;
  int64_t layer_;
};
TORCH_MODULE(SparseMoe);

}  // namespace lt
