// One communicator type for a group of ranks. Host tensors travel through
// MPI (on the communicator's own worker thread), device tensors through NCCL
// (on its own stream, CUDA builds), with the same calls. All collectives work
// along dim 0 of contiguous tensors; the autograd wrappers
// (autograd_collectives.h) move other dimensions there. Every operation
// returns, or waits on, a Work, so waiting runs under the watchdog; every
// operation is counted, so tests and benchmarks can check volumes against
// theory. The `_async` and p2p forms must keep their tensors unchanged until
// their Work completes.
//
// A group that carries the job's device tensors is device-bound: on CUDA its
// device tensors go through NCCL; with parallel.emulate_nccl on CPU its
// operations run in NCCL's order instead (each completes before the next
// starts, a send only once its receive has started, messages between two
// ranks matched by order, not tag), so that orderings that would hang over
// NCCL hang here too and the watchdog names them. A device-bound group
// refuses every operation until enable_device: nothing may use it before
// the device is chosen.
#pragma once
#include <ATen/ATen.h>
#include <mpi.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "parallel/comm/mpi_worker.h"
#include "parallel/comm/work.h"

namespace lt {

class NcclCommunicator;

enum class ReduceOp { sum, avg, max };

enum class DeviceTransport { host, nccl, emulated_nccl };

// One point-to-point message of an exchange.
struct Message {
  at::Tensor tensor;
  int peer = 0;
  int tag = 0;  // matched on host transports; NCCL matches by order
};

// Calls made and payload bytes handed to the operation by this rank
// (all_reduce: the tensor; all_gather: the input; all_to_all: what is sent
// to other ranks; send: the message).
struct OpCounter {
  int64_t calls = 0;
  int64_t bytes = 0;
};

class Communicator {
 public:
  // Takes ownership of `comm` (freed on destruction unless it is MPI_COMM_WORLD/SELF).
  Communicator(MPI_Comm comm, std::string name, double timeout_s, DeviceTransport transport = DeviceTransport::host);
  ~Communicator();
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }
  const std::string& name() const { return name_; }
  MPI_Comm mpi() const { return comm_; }
  void set_timeout(double seconds) { timeout_s_ = seconds; }

  DeviceTransport transport() const { return transport_; }
  // Collective (every rank of the group, with its own device): a
  // device-bound group starts its transport (NCCL on `device`, or its
  // emulation) and takes operations from now on. Once only.
  void enable_device(int device);
  bool device_enabled() const { return enabled_; }
  // Ends this group's operations in progress and refuses later ones
  // (NCCL: ncclCommAbort), so that a rank whose peers are gone can exit.
  void abort(const std::string& reason);
  // Every live communicator of the process: the watchdog has fired and the
  // job is ending.
  static void abort_all(const std::string& reason);

  // In place.
  Work all_reduce_async(at::Tensor& tensor, ReduceOp op = ReduceOp::sum);
  void all_reduce(at::Tensor& tensor, ReduceOp op = ReduceOp::sum) { all_reduce_async(tensor, op).wait(); }
  // Rank i's `input` lands at rows [i * n, (i + 1) * n) of `output`.
  Work all_gather_async(const at::Tensor& input, at::Tensor& output);
  at::Tensor all_gather(const at::Tensor& input);
  // Every rank's text, in rank order (small host messages: file records).
  std::vector<std::string> all_gather(const std::string& text);
  // Reduces `input` over the group; rank i keeps rows [i * n, (i + 1) * n).
  Work reduce_scatter_async(const at::Tensor& input, at::Tensor& output, ReduceOp op = ReduceOp::sum);
  at::Tensor reduce_scatter(const at::Tensor& input, ReduceOp op = ReduceOp::sum);
  // Chunk i of dim 0 goes to rank i; chunk j of the result came from rank j.
  at::Tensor all_to_all(const at::Tensor& input);
  // Uneven: send_rows[i] rows to rank i, recv_rows[j] from rank j (exchanged
  // first when empty).
  at::Tensor all_to_all(const at::Tensor& input, const std::vector<int64_t>& send_rows,
                        std::vector<int64_t> recv_rows = {});
  Work broadcast_async(at::Tensor& tensor, int root);
  void broadcast(at::Tensor& tensor, int root) { broadcast_async(tensor, root).wait(); }
  Work isend(const at::Tensor& tensor, int peer, int tag = 0);
  Work irecv(at::Tensor& tensor, int peer, int tag = 0);
  // Sends and receives issued together, to progress together (NCCL: one
  // ncclGroupStart/End): two ranks that each send to the other before they
  // receive must exchange, or they wait for ever over NCCL.
  Work exchange(const std::vector<Message>& sends, const std::vector<Message>& receives);
  void send(const at::Tensor& tensor, int peer, int tag = 0) { isend(tensor, peer, tag).wait(); }
  void recv(at::Tensor& tensor, int peer, int tag = 0) { irecv(tensor, peer, tag).wait(); }
  void barrier();

  const std::map<std::string, OpCounter>& counters() const { return counters_; }
  void reset_counters() { counters_.clear(); }

 private:
  Work::Source source(const char* op) const;
  void count(const char* op, int64_t bytes) {
    auto& c = counters_[op];
    ++c.calls, c.bytes += bytes;
  }
  // Host operations run on the worker; their lambdas hold the tensors.
  Work submit(const char* op, std::function<void()> call, std::function<void()> finish = {});
  Work post(const char* op, const std::vector<Message>& sends, const std::vector<Message>& receives);
  // Throws unless this group takes operations now (enabled, not aborted).
  void check_ready(const char* op) const;

  MPI_Comm comm_;
  std::string name_;
  double timeout_s_;
  DeviceTransport transport_;
  bool enabled_ = false;
  std::string aborted_;  // why, once aborted
  int rank_ = 0, size_ = 1, world_rank_ = 0;
  std::map<std::string, OpCounter> counters_;
  std::unique_ptr<MpiWorker> worker_;
#ifdef LT_WITH_CUDA
  std::unique_ptr<NcclCommunicator> nccl_;
#endif
};

}  // namespace lt
