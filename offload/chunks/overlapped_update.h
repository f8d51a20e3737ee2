// The chunks' host AdamW overlapped with backward (ProTrain): in the step's
// last backward, as soon as a chunk's gradients are complete, a worker
// thread waits for their reduction over the replicas and updates the chunk
// on the host while backward goes on with the layers before it.
//
// Gradient clipping needs the norm over the whole model, known only when
// backward ends. The worker therefore updates as if no clipping were
// needed, after saving the chunk's values and moments (only when
// train.grad_clip is set); if the norm turns out over the limit, every
// chunk is restored and updated again with its clipped gradients. The
// result is the update after backward, exactly, at the price of the copies
// on every step and a second update on clipped steps.
#pragma once
#include <condition_variable>
#include <deque>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#include "core/optim/adamw.h"
#include "offload/chunks/chunk_manager.h"

namespace lt {

class OverlappedUpdate {
 public:
  // `optimizer` holds the chunks' segments first (segments() order).
  OverlappedUpdate(ChunkManager& chunks, AdamW& optimizer, bool may_clip);
  ~OverlappedUpdate();
  OverlappedUpdate(const OverlappedUpdate&) = delete;
  OverlappedUpdate& operator=(const OverlappedUpdate&) = delete;

  // Before the step's backward: the optimizer's step begins, and each chunk
  // is updated with learning rate `lr` once its gradients are complete.
  void begin(double lr);
  // After backward: waits until every chunk handed over is updated
  // (rethrowing the worker's error); the chunks' reductions are then done
  // or can be finished on this thread.
  void drain();
  // After clipping: every chunk not yet updated is updated; with
  // `clipped`, the speculative updates are undone and redone with the
  // gradients as they are now (scaled).
  void end(bool clipped);
  // The optimizer's slots after the chunks': the rest of the step's update.
  size_t slots() const { return slots_; }
  // Chunks in the order they were handed to the worker, last step.
  const std::vector<size_t>& handed_over() const { return handed_over_; }

 private:
  void complete(size_t chunk);  // from the thread running backward
  void loop();
  void update(size_t chunk);

  ChunkManager& chunks_;
  AdamW& optimizer_;
  bool may_clip_;
  size_t slots_ = 0;
  double lr_ = 0;
  bool active_ = false;
  std::vector<char> updated_;                   // per chunk, this step (written by the worker)
  std::vector<std::vector<at::Tensor>> saved_;  // per chunk: values and moments before the update
  std::vector<size_t> handed_over_;

  std::mutex mutex_;
  std::condition_variable wake_, idle_;
  std::deque<size_t> queue_;
  bool busy_ = false, stopping_ = false;
  std::exception_ptr error_;
  std::thread thread_;
};

}  // namespace lt
