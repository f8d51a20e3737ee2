#include "parallel/comm/mpi_worker.h"

#include <atomic>
#include <chrono>
#include <string>

#include "core/util/error.h"
#include "core/util/trace.h"

namespace lt {

struct MpiWorker::Task {
  std::function<void()> run;          // blocking call, or
  std::function<MPI_Request()> post;  // non-blocking call
  MPI_Request request = MPI_REQUEST_NULL;
  std::atomic<bool> done{false};
  std::string error;  // set before `done`

  void finish(std::string failure = {}) {
    error = std::move(failure);
    run = nullptr, post = nullptr;  // release what the call captured
    done.store(true, std::memory_order_release);
  }
};

namespace {

MpiWorker::Ready ready_of(std::shared_ptr<MpiWorker::Task> task) {
  return [task] {
    if (!task->done.load(std::memory_order_acquire)) return false;
    if (!task->error.empty()) fail(task->error);
    return true;
  };
}

}  // namespace

MpiWorker::MpiWorker() : thread_([this] { loop(); }) {}

MpiWorker::~MpiWorker() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_one();
  thread_.join();
}

MpiWorker::Ready MpiWorker::run(std::function<void()> call) {
  auto task = std::make_shared<Task>();
  task->run = std::move(call);
  return enqueue(std::move(task));
}

MpiWorker::Ready MpiWorker::post(std::function<MPI_Request()> call) {
  auto task = std::make_shared<Task>();
  task->post = std::move(call);
  return enqueue(std::move(task));
}

MpiWorker::Ready MpiWorker::enqueue(std::shared_ptr<Task> task) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    queue_.push_back(task);
  }
  wake_.notify_one();
  return ready_of(std::move(task));
}

bool MpiWorker::poll_posted() {
  bool progressed = false;
  for (auto it = posted_.begin(); it != posted_.end();) {
    int complete = 0;
    if (MPI_Test(&(*it)->request, &complete, MPI_STATUS_IGNORE) != MPI_SUCCESS) complete = 1;
    if (complete) {
      (*it)->finish();
      it = posted_.erase(it), progressed = true;
    } else {
      ++it;
    }
  }
  return progressed;
}

void MpiWorker::loop() {
  bool traced = false;  // recording into the main thread's trace (profile:)
  for (;;) {
    std::shared_ptr<Task> task;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      if (queue_.empty() && posted_.empty()) wake_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (queue_.empty() && posted_.empty() && stopping_) return;
      if (!queue_.empty()) task = std::move(queue_.front()), queue_.pop_front();
    }
    if (!task) {  // only messages in flight: progress them, gently
      if (!poll_posted()) std::this_thread::sleep_for(std::chrono::microseconds(20));
      continue;
    }
    follow_trace(traced);
    try {
      if (task->run) {
        task->run();
        task->finish();
      } else {
        task->request = task->post();
        posted_.push_back(task);
      }
    } catch (const std::exception& e) {
      task->finish(e.what());
    }
    poll_posted();
  }
}

}  // namespace lt
