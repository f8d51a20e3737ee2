// Evaluation on the job's own layout. The ranks of one model replica (its
// tp x pp x sp ranks) score a batch of whole sequences together, each
// running its part as in training: its columns of every sequence, its
// stage's layers, its slices, the vocabulary-parallel scores; then every
// rank of the replica gets the scores of the whole sequences. The dp
// replicas share the batches. So no rank needs the whole model, and no rank
// works alone while the others wait.
#pragma once
#include "core/config/config.h"
#include "train/evaluate.h"
#include "parallel/mesh/mesh.h"

namespace lt {

// `model`: this rank's part (build_rank_model's), computing activations in
// `activations` (what passes between stages).
Scorer layout_scorer(LlamaForCausalLMImpl& model, Mesh& mesh, const ParallelConfig& parallel, const at::Device& device,
                     at::ScalarType activations);

// The dp replicas, each every dp-th batch; in lockstep under expert
// parallelism, whose all-to-all joins ranks of different replicas, and
// when the replicas gather weights together (`gathers`: ZeRO-3).
EvalShare replica_share(Mesh& mesh, bool gathers = false);

}  // namespace lt
