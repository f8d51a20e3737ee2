// The thread on which one communicator's host (MPI) operations run, one at a
// time in the order they were issued: the MPI counterpart of a NCCL stream.
// Collectives run as blocking MPI calls (the library's tuned algorithms;
// its non-blocking collectives are up to 2.5x slower here), yet the caller
// is free: it waits on a Work, under the watchdog, only when it needs the
// result, so a gradient bucket's reduction overlaps the rest of backward.
// Point-to-point messages are posted non-blocking (a blocking send could
// deadlock a ring) and completed by the worker's polling; in order (NCCL's
// emulation), each posted call completes before the next call starts.
#pragma once
#include <mpi.h>

#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace lt {

class MpiWorker {
 public:
  MpiWorker();
  ~MpiWorker();  // finishes what was issued, then stops (at once when aborted)
  MpiWorker(const MpiWorker&) = delete;
  MpiWorker& operator=(const MpiWorker&) = delete;

  // Polled by a Work: true once complete; throws lt::Error if the call failed.
  using Ready = std::function<bool()>;
  // Runs a blocking call on the worker; complete when it returns.
  Ready run(std::function<void()> call);
  // Posts non-blocking calls (one message, or a group issued together);
  // complete when all their requests are. The call object (and what it
  // captures) lives until then.
  Ready post(std::function<std::vector<MPI_Request>()> call);

  // NCCL's order (parallel.emulate_nccl): a posted call completes before
  // the next issued call starts, as a stream runs its kernels one by one.
  void set_in_order(bool in_order);
  // Ends every call not yet complete with `reason`, and every later one: the
  // job is ending (the watchdog fired). A blocking MPI call in progress
  // cannot be interrupted: the thread is then left behind.
  void abort(const std::string& reason);

  struct Task;   // one issued call (defined in the .cpp)
  struct State;  // shared with the thread, which may outlive an aborted worker

 private:
  Ready enqueue(std::shared_ptr<Task> task);

  std::shared_ptr<State> state_;
  std::thread thread_;
};

}  // namespace lt
