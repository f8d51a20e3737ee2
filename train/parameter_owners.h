// Who owns a rank model's parameters outside offloaded chunks: one
// ParameterState per replica set (parallel/data_parallel/replica_sets.h),
// at the recipe's ZeRO level, with how many (tp, pp) positions hold each
// set's copy and who holds the other experts. Training and `longtrain eval`
// build them alike, so an evaluation of a ZeRO-3 layout holds 1/N of the
// weights as its training did.
#pragma once
#include <functional>
#include <memory>
#include <vector>

#include "parallel/data_parallel/parameter_state.h"
#include "train/rank_model.h"

namespace lt {

struct ParameterOwners {
  std::vector<std::unique_ptr<ParameterState>> states;
  std::vector<int64_t> copies;       // per state: the (tp, pp) positions holding its copy
  std::vector<Communicator*> parts;  // per state: the ranks holding the other experts, or null

  // ZeRO-3's gather of a layer's weights before it runs, for
  // build_rank_model (the states come after the model); empty below ZeRO-3.
  LayerFetch layer_gather(const Config& config);
  // The states of `rank`'s parameters (those of its chunks excepted).
  void own(const Config& config, Mesh& mesh, RankModel& rank);
  // Runs `fn` with every parameter whole on its fp32 master (to save, load
  // or initialise them): the chunks' host copies, ZeRO-3's gathered shards.
  void on_masters(ChunkManager* chunks, const std::function<void()>& fn);
  // Runs `fn` with the weights a step needs beyond its layers' own gathers
  // (ZeRO-3: ParameterState::gather_for_step()), released after it.
  void with_step_weights(const std::function<void()>& fn);
};

}  // namespace lt
