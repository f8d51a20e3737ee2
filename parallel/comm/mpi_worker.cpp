#include "parallel/comm/mpi_worker.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>

#include "core/util/error.h"
#include "core/util/trace.h"

namespace lt {

struct MpiWorker::Task {
  std::function<void()> run;                       // blocking call, or
  std::function<std::vector<MPI_Request>()> post;  // non-blocking calls
  std::vector<MPI_Request> requests;
  std::atomic<bool> done{false};
  std::string error;  // set before `done`

  void finish(std::string failure = {}) {
    error = std::move(failure);
    run = nullptr, post = nullptr;  // release what the call captured
    done.store(true, std::memory_order_release);
  }
  // True once every request has completed (a failed test counts as done).
  bool test() {
    int complete = 0;
    if (MPI_Testall(static_cast<int>(requests.size()), requests.data(), &complete, MPI_STATUSES_IGNORE) != MPI_SUCCESS)
      complete = 1;
    return complete;
  }
  // Ends an aborted call. A message already matched may still be moving:
  // what the call holds (its tensors) is kept for ever rather than freed
  // under MPI.
  void abandon(const std::string& reason) {
    for (auto& r : requests)
      if (r != MPI_REQUEST_NULL) MPI_Cancel(&r), MPI_Request_free(&r);
    if (post) new std::function<std::vector<MPI_Request>()>(std::move(post));
    finish(reason);
  }
};

struct MpiWorker::State {
  std::mutex mutex;
  std::condition_variable wake;
  std::deque<std::shared_ptr<Task>> queue;
  std::vector<std::shared_ptr<Task>> posted;  // touched by the worker only
  bool stopping = false;
  std::atomic<bool> in_order{false};
  std::atomic<bool> aborted{false};
  std::string abort_reason;  // set before `aborted`

  void loop();
  bool poll_posted();
  void complete_in_order(Task& task);
};

namespace {

MpiWorker::Ready ready_of(std::shared_ptr<MpiWorker::Task> task) {
  return [task] {
    if (!task->done.load(std::memory_order_acquire)) return false;
    if (!task->error.empty()) fail(task->error);
    return true;
  };
}

void pause() { std::this_thread::sleep_for(std::chrono::microseconds(20)); }

}  // namespace

bool MpiWorker::State::poll_posted() {
  bool progressed = false;
  for (auto it = posted.begin(); it != posted.end();) {
    if ((*it)->test()) {
      (*it)->finish();
      it = posted.erase(it), progressed = true;
    } else {
      ++it;
    }
  }
  return progressed;
}

void MpiWorker::State::complete_in_order(Task& task) {
  while (!task.test()) {
    if (aborted.load(std::memory_order_acquire)) return task.abandon(abort_reason);
    pause();
  }
  task.finish();
}

void MpiWorker::State::loop() {
  bool traced = false;  // recording into the main thread's trace (profile:)
  for (;;) {
    std::shared_ptr<Task> task;
    {
      std::unique_lock<std::mutex> lock(mutex);
      if (queue.empty() && posted.empty()) wake.wait(lock, [&] { return stopping || !queue.empty(); });
      if (queue.empty() && posted.empty() && stopping) return;
      if (!queue.empty()) task = std::move(queue.front()), queue.pop_front();
    }
    if (aborted.load(std::memory_order_acquire)) {
      for (auto& t : posted) t->abandon(abort_reason);
      posted.clear();
      if (task) task->abandon(abort_reason);
      continue;
    }
    if (!task) {  // only messages in flight: progress them, gently
      if (!poll_posted()) pause();
      continue;
    }
    follow_trace(traced);
    try {
      if (task->run) {
        task->run();
        task->finish();
      } else {
        task->requests = task->post();
        if (in_order.load(std::memory_order_acquire)) complete_in_order(*task);
        else posted.push_back(task);
      }
    } catch (const std::exception& e) {
      task->finish(e.what());
    }
    poll_posted();
  }
}

MpiWorker::MpiWorker() : state_(std::make_shared<State>()), thread_([state = state_] { state->loop(); }) {}

MpiWorker::~MpiWorker() {
  {
    std::lock_guard<std::mutex> lock(state_->mutex);
    state_->stopping = true;
  }
  state_->wake.notify_one();
  if (state_->aborted) thread_.detach();  // it may be inside a blocking call for ever
  else thread_.join();
}

MpiWorker::Ready MpiWorker::run(std::function<void()> call) {
  auto task = std::make_shared<Task>();
  task->run = std::move(call);
  return enqueue(std::move(task));
}

MpiWorker::Ready MpiWorker::post(std::function<std::vector<MPI_Request>()> call) {
  auto task = std::make_shared<Task>();
  task->post = std::move(call);
  return enqueue(std::move(task));
}

void MpiWorker::set_in_order(bool in_order) { state_->in_order = in_order; }

void MpiWorker::abort(const std::string& reason) {
  {
    std::lock_guard<std::mutex> lock(state_->mutex);
    if (state_->aborted) return;
    state_->abort_reason = reason;
    state_->aborted.store(true, std::memory_order_release);
  }
  state_->wake.notify_one();
}

MpiWorker::Ready MpiWorker::enqueue(std::shared_ptr<Task> task) {
  {
    std::lock_guard<std::mutex> lock(state_->mutex);
    if (state_->aborted) {
      task->finish(state_->abort_reason);
      return ready_of(std::move(task));
    }
    state_->queue.push_back(task);
  }
  state_->wake.notify_one();
  return ready_of(std::move(task));
}

}  // namespace lt
