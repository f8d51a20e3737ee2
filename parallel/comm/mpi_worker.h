// The thread on which one communicator's host (MPI) operations run, one at a
// time in the order they were issued: the MPI counterpart of a NCCL stream.
// Collectives run as blocking MPI calls (the library's tuned algorithms;
// its non-blocking collectives are up to 2.5x slower here), yet the caller
// is free: it waits on a Work, under the watchdog, only when it needs the
// result, so a gradient bucket's reduction overlaps the rest of backward.
// Point-to-point messages are posted non-blocking (a blocking send could
// deadlock a ring) and completed by the worker's polling.
#pragma once
#include <mpi.h>

#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace lt {

class MpiWorker {
 public:
  MpiWorker();
  ~MpiWorker();  // finishes what was issued, then stops
  MpiWorker(const MpiWorker&) = delete;
  MpiWorker& operator=(const MpiWorker&) = delete;

  // Polled by a Work: true once complete; throws lt::Error if the call failed.
  using Ready = std::function<bool()>;
  // Runs a blocking call on the worker; complete when it returns.
  Ready run(std::function<void()> call);
  // Posts a non-blocking call; complete when its request completes. The
  // call object (and what it captures) lives until then.
  Ready post(std::function<MPI_Request()> call);

  struct Task;  // one issued call (defined in the .cpp)

 private:
  Ready enqueue(std::shared_ptr<Task> task);
  void loop();
  bool poll_posted();

  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::shared_ptr<Task>> queue_;
  std::vector<std::shared_ptr<Task>> posted_;  // touched by the worker only
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace lt
