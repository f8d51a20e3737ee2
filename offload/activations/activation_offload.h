// Activation offload: the inputs checkpointed layers keep for backward go to
// host memory during forward and come back for backward, the next one (in
// backward's order: the layer before) prefetched while the current one is
// recomputed. On CUDA the copies run on a side stream into pinned memory,
// ordered against the compute stream by events, so they overlap compute. On
// the host the inputs already are in host memory: they stay where they are.
#pragma once
#include <map>
#include <mutex>

#include "offload/activations/checkpoint.h"

namespace lt {

class ActivationOffload : public InputStash {
 public:
  ActivationOffload();
  ~ActivationOffload() override;

  int64_t put(const at::Tensor& x) override;
  at::Tensor take(int64_t ticket) override;

  // Bytes of activations held in host memory now, and at most so far.
  int64_t host_bytes() const { return host_bytes_; }
  int64_t peak_host_bytes() const { return peak_host_bytes_; }

 private:
  struct Entry;
  void prefetch(Entry& entry);

  std::mutex mutex_;  // backward may run on another thread than forward
  std::map<int64_t, std::unique_ptr<Entry>> entries_;
  int64_t next_ticket_ = 0;
  int64_t host_bytes_ = 0, peak_host_bytes_ = 0;
  struct Streams;
  std::unique_ptr<Streams> streams_;  // CUDA: the copy stream
};

}  // namespace lt
