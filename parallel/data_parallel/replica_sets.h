// Which ranks hold each parameter, and so over which group its gradient is
// summed (the gradient of a copy is the sum over every rank that holds it):
//   tp-split weights: dp x sp, within their tp slice;
//   norms: dp x sp, and with tp's sequence parallelism also over tp (each
//     tp rank then saw only its share of the tokens);
//   the q and k norms of each head (Qwen3): dp x sp x tp, as each tp rank
//     saw only its heads;
//   kv heads shared by several tp ranks (tp > kv heads): dp x sp x those ranks;
//   tied embeddings split over pipeline stages: dp x sp of both end stages;
//   experts under expert parallelism: the dp x sp ranks holding the same
//     experts (ep_dp); the ep group holds the others.
// A set also says how many (tp, pp) positions hold the same values, so the
// clipping norm counts each once.
#pragma once
#include <vector>

#include "core/model/llama.h"
#include "core/optim/adamw.h"
#include "parallel/mesh/mesh.h"

namespace lt {

struct ReplicaSet {
  Communicator* group;
  std::vector<NamedParameter> params;
  int64_t copies;  // (tp, pp) positions holding these values
  // Ranks holding the set's other parts (the other experts), whose squares
  // add to the clipping norm; null: none.
  Communicator* parts = nullptr;
  // The group joins ranks of different pipeline stages (tied embeddings).
  bool spans_stages = false;
};

// Collective over the mesh's world (it may split groups); every rank gets the
// sets of its own parameters, in a fixed order, leaving out those named in
// `elsewhere` (reduced by other means).
std::vector<ReplicaSet> replica_sets(Mesh& mesh, LlamaForCausalLMImpl& model,
                                     const std::vector<NamedParameter>& elsewhere = {});

}  // namespace lt
