// The one owner of a rank model's state: the offloaded chunks (the layers'
// weights and gradients in host memory, memory.offload_model), one
// ParameterState per replica set for every other parameter (at the
// recipe's ZeRO level), the AdamW over both, the chunks' overlapped host
// update, and the gradient hand-off (gradient_handoff.h) that tells buckets
// and chunks alike when a gradient is final. The trainer, the memory
// planner, the checkpoints and `longtrain eval` drive it through one step
// protocol; a new kind of model state belongs here, not beside it.
//
// A step: begin_update(lr) (when an update follows), begin_step(); per
// backward begin_backward(last) and end_backward(); finish_backward();
// clip(); update(lr).
#pragma once
#include <functional>
#include <memory>
#include <vector>

#include "offload/chunks/chunk_manager.h"
#include "offload/chunks/overlapped_update.h"
#include "parallel/data_parallel/parameter_state.h"
#include "train/rank_model.h"

namespace lt {

class ModelState {
 public:
  ModelState() = default;
  ModelState(const ModelState&) = delete;
  ModelState& operator=(const ModelState&) = delete;
  ~ModelState();

  // What brings a layer's weights before it runs (its chunk fetched, then
  // ZeRO-3's gather), for build_rank_model: the state comes after the
  // model, the layers run later. Empty when nothing needs fetching.
  LayerFetch layer_fetch(const Config& config);
  // Takes over `rank`'s parameters: the layers' into chunks (with
  // memory.offload_model), the others into their replica sets' states.
  // `training`: also the optimizer (and the states at every ZeRO level; an
  // evaluation needs them only to gather ZeRO-3's shards).
  void own(const Config& config, Mesh& mesh, RankModel& rank, at::Device device, bool training = true);

  // --- The step ---
  // An update with learning rate `lr` follows the coming step: the chunks'
  // overlapped update starts as their gradients become final.
  void begin_update(double lr);
  // Gradients zeroed, the weights a step needs gathered (ZeRO-3).
  void begin_step();
  void begin_backward(bool last);
  void end_backward();
  // After the last backward: every reduction complete.
  void finish_backward();
  // The gradients' norm over the whole model (summed over `model`, the tp
  // x pp ranks); above `max_norm` (if > 0) they are scaled to it. Returns
  // the norm before clipping.
  double clip(Communicator& model, double max_norm);
  // AdamW with learning rate `lr` on this rank's shards; `clipped`: clip()
  // scaled the gradients. Then the replicas share the updated weights.
  void update(double lr, bool clipped);
  // The fp32 masters changed (an update, a load): compute copies are stale.
  void masters_changed();

  // Runs `fn` with every parameter whole on its fp32 master (to save, load
  // or initialise them): the chunks' host copies, ZeRO-3's gathered shards.
  void on_masters(const std::function<void()>& fn);
  // Runs `fn` with the weights a step needs beyond its layers' own gathers
  // (ZeRO-3), released after it.
  void with_step_weights(const std::function<void()>& fn);
  // Gradients zeroed (after a probe that is not a step).
  void zero_grad();

  // What the optimizer updates: the chunks' segments, then the states'.
  std::vector<ParamSegment> segments() const;
  // Test-only fault injection (LT_FAULT=dropgrad): this rank's first
  // gradient bucket enters the coming reduction as zeros, as a bucket
  // launched before its gradients were final would.
  void drop_first_bucket();

  ChunkManager* chunks() { return chunks_.get(); }
  const std::vector<std::unique_ptr<ParameterState>>& states() const { return states_; }
  AdamW& optimizer() { return *optimizer_; }
  const OverlappedUpdate* overlapped_update() const { return overlap_.get(); }
  int64_t bucket_count() const;
  // Bytes the states hold on the device between steps, with the moments of
  // the segments they hand the optimizer; and the chunks' host segments'
  // elements (what a host optimizer updates).
  int64_t device_state_bytes() const;
  int64_t device_segment_elements() const;
  int64_t host_segment_elements() const;

 private:
  std::shared_ptr<ChunkManager> chunks_;
  std::vector<std::unique_ptr<ParameterState>> states_;
  std::vector<int64_t> copies_;       // per state: the (tp, pp) positions holding its copy
  std::vector<Communicator*> parts_;  // per state: the ranks holding the other experts, or null
  std::shared_ptr<GradientHandoff> handoff_;
  std::shared_ptr<ComputeWeights> compute_;
  std::unique_ptr<AdamW> optimizer_;
  std::unique_ptr<OverlappedUpdate> overlap_;  // memory.overlap_update (with offload_model)
};

}  // namespace lt
