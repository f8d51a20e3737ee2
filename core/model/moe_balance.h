// What the mixture-of-experts layers of one rank share during a step: the
// load-balancing and z losses, their scope, and the step's routing
// statistics for the log.
//
// Balance loss (Switch / GShard, normalised as Megatron's so that a uniform
// router scores `balance_coef`): coef * E * sum_e f_e * P_e, with f_e the
// share of the top-k selections that went to expert e and P_e the mean
// router probability of e, over the scope of `moe.balance`:
//  - micro_batch: each micro-batch (its tokens across the sp ranks), the
//    losses averaged over the global batch's micro-batches;
//  - global_batch: the whole global batch; the selection counts are summed
//    over dp x sp and over the step's micro-batches (reset every step);
//  - sequence: each sequence, averaged over the global batch's sequences.
// Every rank adds its tokens' part to the loss through the layer's output
// (an autograd identity that feeds the part a gradient of one), so the
// parts of all ranks, stages and micro-batches sum to the global-batch loss
// and its gradient is right for any dp, sp, pp and accumulation. f is a
// constant of the loss; under global_batch it is read when backward
// reaches the layer, so it covers every micro-batch whose forward ran by
// then: all of them once the schedule runs all forwards first (the trainer
// does so for global_batch), which makes the loss and gradient those of the
// whole batch at once.
//
// Statistics and reduced counts are kept per (layer, micro-batch), so a
// layer recomputed in backward reuses them: no second collective, no double
// counting.
#pragma once
#include <ATen/ATen.h>

#include <functional>
#include <map>
#include <memory>

#include "core/config/config.h"

namespace lt {

// Where a layer's router sent its tokens.
struct Routing {
  at::Tensor logits;   // [tokens, experts], the router's
  at::Tensor probs;    // [tokens, experts] fp32 softmax
  at::Tensor experts;  // [tokens, top_k] chosen experts, int64
  at::Tensor weights;  // [tokens, top_k] their combination weights
  at::Tensor kept;     // [tokens, top_k] bool: within the expert's capacity
};

// How many of `experts` (expert indices, any shape) name each of experts
// 0..n-1, on their device: a bincount that never asks the host for a size.
at::Tensor count_per_expert(const at::Tensor& experts, int64_t n);

// The router's choice for `logits` under `config` (top-k, renormalisation,
// capacity and drop policy).
Routing route(const at::Tensor& logits, const MoeConfig& config);

struct MoeStepStats {
  double balance_loss = 0, z_loss = 0;
  double load_min = 0, load_max = 0, load_cv = 0;  // expert load / mean load, over the MoE layers
  double dropped = 0;                              // fraction of the selections over capacity
  at::Tensor selections;  // this rank's selections per expert [layers, experts] (fp64), over the step
};

class MoeBalance {
 public:
  using Sum = std::function<void(at::Tensor&)>;  // an in-place sum over a group of ranks
  // `over_sequence`: the ranks sharing a sequence (sp); `over_batch`: every
  // rank holding a part of the global batch (dp x sp). Unset: one rank.
  MoeBalance(const ModelConfig& model, Sum over_sequence = {}, Sum over_batch = {});

  // A step's gradients begin: the global batch has these tokens, sequences
  // and micro-batches (summed over the data-parallel ranks).
  void begin_step(int64_t tokens, int64_t sequences, int64_t micro_batches);
  // The micro-batch whose forward (or recomputation) runs next.
  void set_micro_batch(int micro) { micro_ = micro; }
  // `out` with the layer's losses attached; `rows` sequences make up the
  // routed tokens. Outside a step (evaluation, profiling): `out` alone.
  at::Tensor attach(int64_t layer, const at::Tensor& out, const Routing& routing, int64_t rows);
  // Ends the step: its statistics, summed over every rank by `over_world`,
  // so every rank logs the same.
  MoeStepStats end_step(const Sum& over_world = {});
  bool in_step() const { return in_step_; }

 private:
  struct Slot;
  // Records the (layer, micro-batch)'s routing once: its counts, reduced
  // over the scope, and the detached `psum` and `z` the losses are built from.
  void record(int64_t layer, const Routing& routing, int64_t rows, const at::Tensor& psum, const at::Tensor& z);
  at::Tensor balance_weights(int64_t layer, const Slot& s) const;

  MoeConfig config_;
  int64_t num_layers_;
  Sum over_sequence_, over_batch_;
  bool in_step_ = false;
  int micro_ = 0;
  double tokens_ = 1, sequences_ = 1, micro_batches_ = 1;
  std::map<std::pair<int64_t, int>, std::shared_ptr<Slot>> slots_;
};

}  // namespace lt
