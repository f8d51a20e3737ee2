// The state of one replica set's parameters (replica_sets.h: the ranks
// holding the same weights), owned in flat buffers as Megatron-Core's
// distributed optimizer and torchtitan's FSDP2 hold it: the weights (fp32
// masters, and under ZeRO-3 their compute-dtype copies), the main
// gradients, and which part of them the optimizer updates. Parameters are
// packed into buckets in reverse registration order, roughly the order
// backward produces gradients; a bucket's reduction starts as soon as its
// gradients are final (gradient_handoff.h: backward has left the scopes of
// all its members), so communication overlaps the rest of backward (or,
// with overlap off, all start after backward). Buckets start in a fixed
// order, the same on every rank.
//
// How much each replica holds (parallel.zero):
//   0  everything; gradients all-reduced on the step's last backward.
//   1  1/R of the optimizer state: each bucket's gradients are
//      reduce-scattered, the rank updates its shard, and the updated shards
//      are all-gathered back into the weights.
//   2  also 1/R of the main gradients: every backward's gradients are
//      reduce-scattered as they complete and added into the rank's fp32
//      shard; no whole gradient outlives its bucket's reduction.
//   3  also 1/R of the weights: the fp32 master is a shard; a layer's
//      weights are all-gathered in the compute dtype when it runs (forward,
//      recomputation), the next layer's gather prefetched, and freed after
//      it (in backward once its gradients are reduced); the weights outside
//      layers (embedding, final norm, head) are gathered for a step or an
//      evaluation. Between steps a rank holds 1/R of everything.
// Each bucket is cut into R equal shards (padded); rank r owns shard r.
//
// The gradients reduce in fp32 or, with reduce_dtype bf16, through a bf16
// copy of each bucket.
#pragma once
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <vector>

#include "core/optim/adamw.h"
#include "core/optim/gradient_handoff.h"
#include "parallel/comm/communicator.h"

namespace lt {

enum class ZeroLevel { none = 0, optimizer = 1, gradients = 2, weights = 3 };

struct StateOptions {
  int64_t bucket_bytes = 25 << 20;
  bool overlap = true;
  ZeroLevel zero = ZeroLevel::none;
  // The dtype gradients travel in (parallel.reduce_dtype): fp32, or bf16
  // for half the traffic, accumulated and updated in fp32 all the same.
  at::ScalarType reduce_dtype = at::kFloat;
  // ZeRO-3 gathers the weights in the dtype the layers compute in, except
  // those the model reads in fp32 (`read_in_fp32`: the embedding table, the
  // MoE router), which keep their numerics and their gradients' fp32.
  at::ScalarType compute_dtype = at::kFloat;
  std::function<bool(const std::string& name)> read_in_fp32;
  // ZeRO-2/3 reduce each backward's gradients when it ends. A set whose
  // ranks sit on different pipeline stages (tied embeddings) runs its
  // backwards at different times: it reduces once, at the step's end.
  bool reduce_each_backward = true;
  // ZeRO-3 gathers each layer's weights as it runs. A set whose ranks run
  // different numbers of forwards (adaptive packing: each group its own
  // documents) gathers every weight once, at the step's start, and frees
  // them at its end: per-layer gathers, collective over the replicas, would
  // pair one rank's k-th forward with another's, and lock every group to
  // the slowest layer by layer.
  bool gather_each_layer = true;
};

class ParameterState {
 public:
  // Collective over `replicas` in the reductions and gathers; every rank
  // must pass the same parameters in the same order. `handoff` says when
  // backward leaves the parameters' scopes (null: every bucket reduces when
  // backward ends). ZeRO-3's gathers go over `gathers` (the same ranks; by
  // default `replicas`), so that they never queue behind a reduction
  // another rank has not started yet.
  ParameterState(const std::vector<NamedParameter>& params, Communicator& replicas, StateOptions options,
                 std::shared_ptr<GradientHandoff> handoff = nullptr, Communicator* gathers = nullptr);
  ~ParameterState();

  bool sharded() const { return options_.zero != ZeroLevel::none && replicas_.size() > 1; }
  // The parts of the parameters this rank's optimizer updates.
  std::vector<ParamSegment> segments() const;

  // A step: zero_grad(), then for each backward begin_backward(last) and
  // end_backward(), then finish(); afterwards each segment's gradient is
  // the sum over all replicas.
  void zero_grad();
  void begin_backward(bool last);
  void end_backward();
  void finish();
  // Sum of squared gradients over these parameters (each shard counted once).
  double grad_square_sum();
  // Multiplies the gradients of this rank's segments.
  void scale_grads(double factor);
  // After the optimizer: ZeRO-1/2 bring every rank's updated shards to all
  // replicas (ZeRO-3 gathers them when they are next used).
  void gather_parameters();

  // ZeRO-3 (no-ops below): layer `layer` is about to run: its buckets are
  // gathered, the next layer's prefetched, idle ones freed.
  void use(int64_t layer);
  // Gathers what a step needs before its layers run, held until release()
  // or finish(): the weights outside layers, or with gather_each_layer off
  // every weight.
  void gather_for_step();
  // Frees every gathered weight.
  void release();
  // Runs `fn` with the parameters whole, on their fp32 masters (to save,
  // load or initialise them); under ZeRO-3 the masters are gathered first
  // and each rank keeps its shard of what `fn` leaves.
  void with_masters(const std::function<void()>& fn);

  int64_t bucket_count() const { return static_cast<int64_t>(buckets_.size()); }
  // Test-only fault injection: bucket `index`'s gradients on this rank
  // enter its next reduction as zeros.
  void drop_bucket(size_t index);
  // Bytes this rank holds between steps: weights, masters and main
  // gradients with their reduction buffers (the optimizer's moments are
  // AdamW's).
  int64_t buffer_bytes() const;
  // ZeRO-3: the most bytes of gathered weights (prefetches included) held
  // at once since the last zero_grad().
  int64_t peak_gathered_bytes() const { return peak_gathered_; }
  // Seconds the calling thread has waited, in all, for gathers (ZeRO-3) and
  // for reductions: the communication compute did not hide.
  struct Waits {
    double gather_s = 0, reduce_s = 0;
  };
  const Waits& waits() const { return waits_; }

 private:
  struct Bucket;
  void on_left(int64_t scope, bool final);
  void launch(Bucket& bucket);
  void launch_ready();
  void launch_all_and_settle();
  void settle(Bucket& bucket);
  void pack_gradients(Bucket& bucket);
  // ZeRO-3
  void gather(Bucket& bucket);  // starts the all-gather
  void ensure(Bucket& bucket);  // gathered, the parameters viewing it
  void free_weights(Bucket& bucket);
  void point_parameters(Bucket& bucket, const at::Tensor& flat);
  at::Tensor owned_params(const Bucket& bucket) const;  // this rank's part of the fp32 weights
  at::Tensor owned_grads(const Bucket& bucket) const;   // and of the main gradients
  at::ScalarType gathered_dtype(const std::string& name) const;
  bool grads_sharded() const { return options_.zero >= ZeroLevel::gradients; }
  bool weights_sharded() const { return options_.zero == ZeroLevel::weights; }
  bool gathers_layers() const { return weights_sharded() && options_.gather_each_layer; }

  std::vector<NamedParameter> params_;
  std::vector<std::vector<int64_t>> shapes_;  // each parameter's (ZeRO-3 leaves placeholders in the tensors)
  Communicator& replicas_;
  Communicator& gathers_;
  StateOptions options_;
  std::vector<std::unique_ptr<Bucket>> buckets_;
  std::vector<size_t> bucket_of_;                            // parameter -> bucket
  std::map<int64_t, std::vector<size_t>> buckets_of_layer_;  // ZeRO-3: layer -> its buckets
  std::map<int64_t, std::vector<size_t>> buckets_of_scope_;  // gradient scope -> buckets with members in it
  GradientHandoff::Listening listening_;
  std::set<int64_t> done_scopes_;  // scopes the armed backward has left for good
  std::deque<Bucket*> in_flight_;  // ZeRO-2/3: launched, not yet settled, oldest first
  size_t next_launch_ = 0;
  bool armed_ = false;  // gradients launch their bucket's reduction as they complete
  bool due_ = false;    // a backward's reduction is still to run
  int64_t last_layer_ = -1;
  int64_t gathered_ = 0, peak_gathered_ = 0;
  Waits waits_;
};

}  // namespace lt
