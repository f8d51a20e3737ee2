#include "offload/chunks/overlapped_update.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <utility>

namespace lt {

OverlappedUpdate::OverlappedUpdate(ChunkManager& chunks, AdamW& optimizer, bool may_clip)
    : chunks_(chunks), optimizer_(optimizer), may_clip_(may_clip),
      slots_(chunks.chunk_count() > 0 ? chunks.segments_of(chunks.chunk_count() - 1).second : 0),
      updated_(chunks.chunk_count(), 0), saved_(chunks.chunk_count()) {
  chunks_.set_on_complete([this](size_t chunk) { complete(chunk); });
  thread_ = std::thread([this] { loop(); });
}

OverlappedUpdate::~OverlappedUpdate() {
  chunks_.set_on_complete({});
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

void OverlappedUpdate::begin(double lr) {
  optimizer_.begin_step();
  lr_ = lr;
  active_ = true;
  std::fill(updated_.begin(), updated_.end(), 0);
  handed_over_.clear();
}

void OverlappedUpdate::complete(size_t chunk) {
  if (!active_) return;  // gradients computed outside a step (tests, the profiler)
  handed_over_.push_back(chunk);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    queue_.push_back(chunk);
  }
  wake_.notify_one();
}

void OverlappedUpdate::loop() {
  at::init_num_threads();  // this thread's share of the intra-op pool, as the trainer set it
  for (;;) {
    size_t chunk = 0;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (stopping_) return;
      chunk = queue_.front();
      queue_.pop_front();
      busy_ = true;
    }
    std::exception_ptr error;
    try {
      update(chunk);
    } catch (...) {
      error = std::current_exception();
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      busy_ = false;
      if (error && !error_) error_ = error;
    }
    idle_.notify_all();
  }
}

void OverlappedUpdate::update(size_t chunk) {
  chunks_.settle(chunk);
  const auto [first, last] = chunks_.segments_of(chunk);
  if (may_clip_) optimizer_.save(first, last, saved_[chunk]);
  optimizer_.update(first, last, lr_);
  updated_[chunk] = 1;
}

void OverlappedUpdate::drain() {
  std::unique_lock<std::mutex> lock(mutex_);
  idle_.wait(lock, [&] { return queue_.empty() && !busy_; });
  if (!error_) return;
  active_ = false;
  std::rethrow_exception(std::exchange(error_, nullptr));
}

void OverlappedUpdate::end(bool clipped) {
  for (size_t chunk = 0; chunk < updated_.size(); ++chunk) {
    const auto [first, last] = chunks_.segments_of(chunk);
    if (updated_[chunk] && !clipped) continue;
    if (updated_[chunk]) optimizer_.restore(first, last, saved_[chunk]);
    optimizer_.update(first, last, lr_);
  }
  active_ = false;
}

}  // namespace lt
