// One communicator type for a group of ranks. Host tensors travel through
// MPI (on the communicator's own worker thread), device tensors through NCCL
// (on its own stream, CUDA builds), with the same calls. All collectives work
// along dim 0 of contiguous tensors; the autograd wrappers
// (autograd_collectives.h) move other dimensions there. Every operation
// returns, or waits on, a Work, so waiting runs under the watchdog; every
// operation is counted, so tests and benchmarks can check volumes against
// theory. The `_async` and p2p forms must keep their tensors unchanged until
// their Work completes.
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
  Communicator(MPI_Comm comm, std::string name, double timeout_s);
  ~Communicator();
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }
  const std::string& name() const { return name_; }
  MPI_Comm mpi() const { return comm_; }
  void set_timeout(double seconds) { timeout_s_ = seconds; }

#ifdef LT_WITH_CUDA
  // Device tensors of this group go through NCCL from now on (collective:
  // every rank of the group calls it with its own device).
  void enable_nccl(int device);
#endif

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
  Work submit_posted(const char* op, std::function<MPI_Request()> call);

  MPI_Comm comm_;
  std::string name_;
  double timeout_s_;
  int rank_ = 0, size_ = 1, world_rank_ = 0;
  std::map<std::string, OpCounter> counters_;
  std::unique_ptr<MpiWorker> worker_;
#ifdef LT_WITH_CUDA
  std::unique_ptr<NcclCommunicator> nccl_;
#endif
};

}  // namespace lt
