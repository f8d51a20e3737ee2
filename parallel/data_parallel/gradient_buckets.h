// Data parallelism for replicated weights. Parameters and their gradients
// live in flat buckets (the parameters become views into them), filled in
// reverse registration order, which is roughly the order backward produces
// gradients. On the last micro-batch of a step, a bucket's reduction over the
// replicas starts as soon as its last gradient has been accumulated, so
// communication overlaps the rest of backward (or, with overlap off, all start
// after backward). Buckets start in a fixed order, the same on every rank.
//
// With ZeRO-1 each bucket is cut into one shard per replica: gradients are
// reduce-scattered, each rank's optimizer updates only its shards (the
// segments() it reports), and the updated shards are all-gathered back.
//
// The gradients reduce in their own dtype (fp32) or, with reduce_dtype
// bf16, through a bf16 copy of each bucket.
#pragma once
#include <memory>
#include <vector>

#include "core/train/adamw.h"
#include "core/train/gradient_hooks.h"
#include "parallel/comm/communicator.h"

namespace lt {

struct DataParallelOptions {
  int64_t bucket_bytes = 25 << 20;
  bool overlap = true;
  bool shard_optimizer = false;  // ZeRO-1
  // The dtype gradients travel in (parallel.reduce_dtype): fp32, or bf16
  // for half the traffic, accumulated and updated in fp32 all the same.
  at::ScalarType reduce_dtype = at::kFloat;
};

class GradientBuckets {
 public:
  // Collective over `replicas` only in the reductions; every rank must pass
  // the same parameters in the same order.
  GradientBuckets(const std::vector<NamedParameter>& params, Communicator& replicas, DataParallelOptions options);
  ~GradientBuckets();

  // The parts of the parameters this rank's optimizer updates.
  std::vector<ParamSegment> segments() const;

  void zero_grad();
  // The next backward is the step's last: reduce buckets as they fill.
  void arm();
  // Waits for every reduction (starting those not started); afterwards each
  // segment's gradient is the sum over all replicas.
  void finish();
  // Sum of squared gradients over these parameters (each shard counted once).
  double grad_square_sum();
  // Multiplies the gradients of this rank's segments.
  void scale_grads(double factor);
  // ZeRO-1: brings every rank's updated shards to all replicas.
  void gather_parameters();

  int64_t bucket_count() const { return static_cast<int64_t>(buckets_.size()); }
  // Bytes of the flat parameter and gradient buffers (and ZeRO's shard).
  int64_t buffer_bytes() const;

 private:
  struct Bucket;
  void on_gradient(size_t param);
  void launch(Bucket& bucket);
  void launch_ready();

  std::vector<NamedParameter> params_;
  Communicator& replicas_;
  DataParallelOptions options_;
  std::vector<std::unique_ptr<Bucket>> buckets_;
  std::vector<size_t> bucket_of_;  // parameter -> bucket
  GradientHooks hooks_;  // on each parameter's gradient accumulator
  size_t next_launch_ = 0;
  bool armed_ = false;
};

}  // namespace lt
