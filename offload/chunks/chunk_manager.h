// ProTrain-style chunked model state. The layers' parameters, packed in
// execution order into chunks of whole layers (about `chunk_bytes` each),
// live in host memory (pinned on CUDA) with their gradients, and the
// optimizer updates them there (with ZeRO-1 each replica its 1/R of every
// chunk, the gradients reduce-scattered and the update all-gathered). With
// ZeRO-2/3 each replica's host holds only its 1/R of every chunk's values
// and gradients (ZeRO-Infinity's and ProTrain's sharded host state): a
// fetch copies the shard to the device and all-gathers the chunk there, and
// each backward's device gradients are reduce-scattered into the host
// shard. The first `persist` chunks stay on the device; the others are
// copied into `buffers` reusable device buffers when a layer runs, the next
// chunk in the direction of travel is prefetched, and the least recently
// used idle chunk gives up its buffer. Once backward has left a chunk's
// first layer (gradient_handoff.h), its gradients are added into the host
// copy and its buffer is free again.
// Layers are recomputed in backward (checkpointing), so a chunk's weights
// need not stay on the device between forward and backward.
// The device copies are in the compute dtype (bf16 under mixed precision,
// ProTrain's layout: the fp32 masters and moments stay on the host), and so
// are the device gradients, added into the fp32 host gradients after each
// backward. The manager holds all the device memory it uses and counts it, so a
// budget is enforced (and measured) on any build; on the host the "device"
// buffers are ordinary memory and the copies are real.
#pragma once
#include <functional>
#include <map>
#include <memory>
#include <vector>

#include "core/optim/adamw.h"
#include "core/optim/gradient_handoff.h"
#include "parallel/comm/communicator.h"

namespace lt {

struct ChunkOptions {
  int64_t chunk_bytes = 32 << 20;
  int64_t persist = 0;                  // chunks kept on the device
  int64_t buffers = 2;                  // device buffers the other chunks take turns in (current + prefetch)
  int64_t budget_bytes = 0;             // device bytes the manager may hold; 0: no limit
  bool shard_optimizer = false;         // ZeRO-1 over the replicas: each updates 1/R of every chunk
  bool shard_state = false;             // ZeRO-2/3: each also holds only that 1/R on the host
  at::ScalarType compute = at::kFloat;  // of the device copies and gradients
};

class ChunkManager {
 public:
  // `layers`: each layer's index and parameters, in execution order. The
  // parameters' values move to host memory now. `replicas`: the ranks
  // holding the same layers, whose gradients are summed; with shard_state
  // the fetches gather over `gathers` (the same ranks, so that a fetch never
  // queues behind a reduction; by default `replicas`). `handoff` says when
  // backward leaves each layer: it must be the model's.
  ChunkManager(const std::vector<std::pair<int64_t, std::vector<NamedParameter>>>& layers, at::Device device,
               Communicator& replicas, ChunkOptions options, std::shared_ptr<GradientHandoff> handoff,
               Communicator* gathers = nullptr);
  ~ChunkManager();

  // Keeps the first `persist` chunks on the device and gives the others
  // `buffers` device buffers, replacing the layout in use (the planner's
  // choice). Fails if that exceeds the budget.
  void configure(int64_t persist, int64_t buffers);

  // Layer `layer` is about to run (forward, or recomputed in backward):
  // its chunk is made resident and the next one prefetched.
  void use(int64_t layer);

  // The parameters the chunks hold: with their host copies and host
  // gradients, or with shard_state (the host holds no whole copy) the
  // model's parameters themselves.
  const std::vector<NamedParameter>& host_parameters() const { return host_params_; }
  // Host bytes of values and gradients this rank holds.
  int64_t host_bytes() const;
  // What this rank's optimizer updates: the host copies whole, or with
  // ZeRO-1 this rank's 1/R of every chunk; in chunk order.
  std::vector<ParamSegment> segments() const;
  // Chunk `c`'s segments: elements [first, last) of segments().
  std::pair<size_t, size_t> segments_of(size_t chunk) const { return segment_range_.at(chunk); }
  void zero_grad();
  // The coming backward is the step's last: as each chunk's gradients are
  // final, their sum over the replicas starts (with ZeRO-1 only this
  // rank's part of each chunk: a reduce-scatter) and `on_complete` hears
  // of the chunk (from the thread running backward).
  void arm();
  void set_on_complete(std::function<void(size_t chunk)> callback) { on_complete_ = std::move(callback); }
  // Waits for chunk `c`'s reduction (starting it if backward did not) and
  // sums the squares of this rank's part of its gradients.
  void settle(size_t chunk);
  // Settles every chunk not yet settled.
  void reduce();
  // Sum of squared host gradients over the whole model's chunks, and
  // scaling this rank's (gradient clipping).
  double grad_square_sum();
  void scale_grads(double factor);
  // After the optimizer: with ZeRO-1 every rank's updated parts are
  // gathered; the resident chunks' device copies follow the host.
  void refresh();
  // Runs `fn` with the model's parameters on their fp32 host masters (to
  // save, load or initialise them); then the persistent chunks are on the
  // device again, with the masters' values.
  void with_masters(const std::function<void()>& fn);

  int64_t chunk_count() const { return static_cast<int64_t>(chunks_.size()); }
  std::vector<int64_t> chunk_bytes() const;  // each chunk's device weights (its gradients take as much)
  int64_t chunk_of(int64_t layer) const { return static_cast<int64_t>(chunk_of_layer_.at(layer)); }
  int64_t device_bytes() const { return device_bytes_; }
  // Chunks copied to the device in this step, in order (prefetches included).
  const std::vector<int64_t>& fetches() const { return fetches_; }

  // The device bytes `persist` and `buffers` need for these chunks.
  static int64_t required_bytes(const std::vector<int64_t>& chunk_bytes, int64_t persist, int64_t buffers);

 private:
  struct Chunk;
  struct Slot;
  void make_resident(size_t chunk);
  void evict(size_t chunk);
  void on_left(int64_t layer, bool final);
  void hand_off(size_t chunk, bool final);
  void start_reduction(size_t chunk);
  bool sharded() const { return shard_ && replicas_.size() > 1; }
  bool state_sharded() const { return shard_state_ && replicas_.size() > 1; }
  std::vector<ParamSegment> chunk_segments(size_t chunk) const;
  // This rank's part of a chunk's host buffer (all of it unsharded; the
  // buffer itself when the host holds only that part).
  at::Tensor mine(const Chunk& c, const at::Tensor& host) const;
  void point_parameters(Chunk& c, const at::Tensor& values, const at::Tensor& grads);

  std::vector<std::unique_ptr<Chunk>> chunks_;
  std::vector<std::unique_ptr<Slot>> slots_;
  std::map<int64_t, size_t> chunk_of_layer_;
  std::vector<NamedParameter> host_params_;
  std::vector<std::pair<size_t, size_t>> segment_range_;
  std::function<void(size_t)> on_complete_;
  bool armed_ = false;
  at::Device device_;
  Communicator& replicas_;
  Communicator& gathers_;
  bool shard_, shard_state_;
  at::Tensor placeholder_;  // what an evicted parameter holds when the host has no whole copy
  at::ScalarType compute_;
  int64_t device_bytes_ = 0, budget_bytes_ = 0, clock_ = 0;
  std::vector<int64_t> fetches_;
  GradientHandoff::Listening listening_;
};

}  // namespace lt
