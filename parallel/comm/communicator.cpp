#include "parallel/comm/communicator.h"

#include <climits>
#include <cstring>
#include <numeric>

#include "core/util/error.h"
#ifdef LT_WITH_CUDA
#include "parallel/comm/nccl_communicator.h"
#endif

namespace lt {
namespace {

void check_mpi(int code, const char* what) {
  if (code == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  MPI_Error_string(code, text, &length);
  fail(std::string("MPI ") + what + " failed: " + std::string(text, length));
}

MPI_Datatype reduce_type(at::ScalarType type) {
  switch (type) {
    case at::kFloat: return MPI_FLOAT;
    case at::kDouble: return MPI_DOUBLE;
    case at::kLong: return MPI_INT64_T;
    case at::kInt: return MPI_INT32_T;
    case at::kByte: return MPI_UINT8_T;
    default: fail(std::string("host reductions support float32/64 and integer tensors, not ") + c10::toString(type));
  }
}

MPI_Op mpi_op(ReduceOp op) { return op == ReduceOp::max ? MPI_MAX : MPI_SUM; }

int int_count(int64_t n, const char* op) {
  if (n > INT_MAX) fail(std::string(op) + ": " + std::to_string(n) + " elements exceed one MPI call; use smaller buckets");
  return static_cast<int>(n);
}

int64_t row_bytes(const at::Tensor& t) { return t.dim() == 0 ? t.element_size() : t.nbytes() / t.size(0); }

void check_host_input(const at::Tensor& t, const char* op) {
  check(t.is_contiguous(), std::string(op) + ": the tensor must be contiguous");
}

// Finishes an average on the tensor the sum landed in.
std::function<void()> averaging(ReduceOp op, at::Tensor target, int size) {
  if (op != ReduceOp::avg) return {};
  return [target, size]() mutable { target.div_(size); };
}

}  // namespace

Communicator::Communicator(MPI_Comm comm, std::string name, double timeout_s)
    : comm_(comm), name_(std::move(name)), timeout_s_(timeout_s) {
  MPI_Comm_rank(comm_, &rank_);
  MPI_Comm_size(comm_, &size_);
  MPI_Comm_rank(MPI_COMM_WORLD, &world_rank_);
}

Communicator::~Communicator() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized && comm_ != MPI_COMM_WORLD && comm_ != MPI_COMM_SELF && comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
}

#ifdef LT_WITH_CUDA
void Communicator::enable_nccl(int device) {
  NcclUniqueId id{};
  if (rank_ == 0) id = NcclCommunicator::create_id();
  check_mpi(MPI_Bcast(id.data(), static_cast<int>(id.size()), MPI_BYTE, 0, comm_), "broadcast of the NCCL id");
  nccl_ = std::make_unique<NcclCommunicator>(id, rank_, size_, device);
}
#define LT_ON_DEVICE(tensor, call) \
  if ((tensor).is_cuda()) {        \
    check(nccl_ != nullptr, "group '" + name_ + "' has no NCCL communicator for device tensors"); \
    return nccl_->call;            \
  }
#else
#define LT_ON_DEVICE(tensor, call) \
  check(!(tensor).is_cuda(), "device tensors need a CUDA build (group '" + name_ + "')");
#endif

Work::Source Communicator::source(const char* op) const { return {op, name_, rank_, size_, world_rank_, timeout_s_}; }

Work Communicator::mpi_work(const char* op, std::vector<MPI_Request> requests, std::vector<at::Tensor> keep,
                            std::function<void()> finish) const {
  auto pending = std::make_shared<std::vector<MPI_Request>>(std::move(requests));
  auto ready = [pending, keep = std::move(keep)]() {
    int done = 0;
    check_mpi(MPI_Testall(static_cast<int>(pending->size()), pending->data(), &done, MPI_STATUSES_IGNORE),
              "test of a request");
    return done != 0;
  };
  return Work(source(op), std::move(ready), std::move(finish));
}

Work Communicator::all_reduce_async(at::Tensor& tensor, ReduceOp op) {
  count("all_reduce", tensor.nbytes());
  LT_ON_DEVICE(tensor, all_reduce(tensor, op, source("all_reduce")))
  check_host_input(tensor, "all_reduce");
  MPI_Request request;
  check_mpi(MPI_Iallreduce(MPI_IN_PLACE, tensor.data_ptr(), int_count(tensor.numel(), "all_reduce"),
                           reduce_type(tensor.scalar_type()), mpi_op(op), comm_, &request),
            "all_reduce");
  return mpi_work("all_reduce", {request}, {tensor}, averaging(op, tensor, size_));
}

Work Communicator::all_gather_async(const at::Tensor& input, at::Tensor& output) {
  check(output.numel() == input.numel() * size_ && output.scalar_type() == input.scalar_type(),
        "all_gather: the output must hold group size x the input");
  count("all_gather", input.nbytes());
  LT_ON_DEVICE(input, all_gather(input, output, source("all_gather")))
  check_host_input(input, "all_gather");
  check_host_input(output, "all_gather");
  MPI_Request request;
  const int bytes = int_count(input.nbytes(), "all_gather");
  check_mpi(MPI_Iallgather(input.data_ptr(), bytes, MPI_BYTE, output.data_ptr(), bytes, MPI_BYTE, comm_, &request),
            "all_gather");
  return mpi_work("all_gather", {request}, {input, output});
}

at::Tensor Communicator::all_gather(const at::Tensor& input) {
  auto sizes = input.sizes().vec();
  if (sizes.empty()) sizes.push_back(1);
  sizes[0] *= size_;
  auto output = at::empty(sizes, input.options());
  all_gather_async(input, output).wait();
  return output;
}

std::vector<std::string> Communicator::all_gather(const std::string& text) {
  auto lengths = all_gather(at::tensor({static_cast<int64_t>(text.size())}, at::kLong));
  const int64_t longest = lengths.max().item<int64_t>();
  auto bytes = at::zeros({longest}, at::kByte);
  if (!text.empty()) std::memcpy(bytes.data_ptr(), text.data(), text.size());
  auto all = all_gather(bytes);
  std::vector<std::string> out;
  for (int i = 0; i < size_; ++i)
    out.emplace_back(reinterpret_cast<const char*>(all.data_ptr<uint8_t>()) + i * longest, lengths[i].item<int64_t>());
  return out;
}

Work Communicator::reduce_scatter_async(const at::Tensor& input, at::Tensor& output, ReduceOp op) {
  check(input.dim() > 0 && input.size(0) % size_ == 0 && output.numel() * size_ == input.numel(),
        "reduce_scatter: dim 0 of the input must split evenly over the " + std::to_string(size_) + " ranks of '" +
            name_ + "'");
  count("reduce_scatter", input.nbytes());
  LT_ON_DEVICE(input, reduce_scatter(input, output, op, source("reduce_scatter")))
  check_host_input(input, "reduce_scatter");
  check_host_input(output, "reduce_scatter");
  MPI_Request request;
  check_mpi(MPI_Ireduce_scatter_block(input.data_ptr(), output.data_ptr(), int_count(output.numel(), "reduce_scatter"),
                                      reduce_type(input.scalar_type()), mpi_op(op), comm_, &request),
            "reduce_scatter");
  return mpi_work("reduce_scatter", {request}, {input, output}, averaging(op, output, size_));
}

at::Tensor Communicator::reduce_scatter(const at::Tensor& input, ReduceOp op) {
  check(input.dim() > 0, "reduce_scatter: needs at least one dimension");
  auto sizes = input.sizes().vec();
  sizes[0] /= size_;
  auto output = at::empty(sizes, input.options());
  reduce_scatter_async(input, output, op).wait();
  return output;
}

at::Tensor Communicator::all_to_all(const at::Tensor& input) {
  check(input.dim() > 0 && input.size(0) % size_ == 0,
        "all_to_all: dim 0 (" + std::to_string(input.dim() ? input.size(0) : 0) + ") must split evenly over the " +
            std::to_string(size_) + " ranks of '" + name_ + "'");
  const int64_t rows = input.size(0) / size_;
  return all_to_all(input, std::vector<int64_t>(size_, rows), std::vector<int64_t>(size_, rows));
}

at::Tensor Communicator::all_to_all(const at::Tensor& input, const std::vector<int64_t>& send_rows,
                                    std::vector<int64_t> recv_rows) {
  check(input.dim() > 0, "all_to_all: needs at least one dimension");
  check(static_cast<int>(send_rows.size()) == size_, "all_to_all: one send count per rank of '" + name_ + "'");
  check(std::accumulate(send_rows.begin(), send_rows.end(), int64_t{0}) == input.size(0),
        "all_to_all: the send counts must add up to dim 0 of the input");
  if (recv_rows.empty()) {  // each rank tells each other how much to expect
    auto counts = all_to_all(at::tensor(send_rows, at::kLong));
    recv_rows.assign(counts.data_ptr<int64_t>(), counts.data_ptr<int64_t>() + size_);
  }
  auto sizes = input.sizes().vec();
  sizes[0] = std::accumulate(recv_rows.begin(), recv_rows.end(), int64_t{0});
  auto output = at::empty(sizes, input.options());
  const int64_t row = row_bytes(input);
  count("all_to_all", (input.size(0) - send_rows[rank_]) * row);
  std::vector<int64_t> send_bytes(size_), recv_bytes(size_);
  for (int i = 0; i < size_; ++i) send_bytes[i] = send_rows[i] * row, recv_bytes[i] = recv_rows[i] * row;
#ifdef LT_WITH_CUDA
  if (input.is_cuda()) {
    check(nccl_ != nullptr, "group '" + name_ + "' has no NCCL communicator for device tensors");
    nccl_->all_to_all(input, output, send_bytes, recv_bytes, source("all_to_all")).wait();
    return output;
  }
#endif
  check_host_input(input, "all_to_all");
  // Byte counts and offsets as MPI wants them; they live until completion.
  auto layout = std::make_shared<std::vector<int>>(4 * size_);
  int* sc = layout->data();
  int* sd = sc + size_;
  int* rc = sd + size_;
  int* rd = rc + size_;
  int64_t send_at = 0, recv_at = 0;
  for (int i = 0; i < size_; ++i) {
    sc[i] = int_count(send_bytes[i], "all_to_all"), sd[i] = int_count(send_at, "all_to_all");
    rc[i] = int_count(recv_bytes[i], "all_to_all"), rd[i] = int_count(recv_at, "all_to_all");
    send_at += send_bytes[i], recv_at += recv_bytes[i];
  }
  MPI_Request request;
  check_mpi(MPI_Ialltoallv(input.data_ptr(), sc, sd, MPI_BYTE, output.data_ptr(), rc, rd, MPI_BYTE, comm_, &request),
            "all_to_all");
  mpi_work("all_to_all", {request}, {input, output}, [layout] {}).wait();
  return output;
}

Work Communicator::broadcast_async(at::Tensor& tensor, int root) {
  count("broadcast", tensor.nbytes());
  LT_ON_DEVICE(tensor, broadcast(tensor, root, source("broadcast")))
  check_host_input(tensor, "broadcast");
  MPI_Request request;
  check_mpi(MPI_Ibcast(tensor.data_ptr(), int_count(tensor.nbytes(), "broadcast"), MPI_BYTE, root, comm_, &request),
            "broadcast");
  return mpi_work("broadcast", {request}, {tensor});
}

Work Communicator::isend(const at::Tensor& tensor, int peer, int tag) {
  count("send", tensor.nbytes());
  LT_ON_DEVICE(tensor, send(tensor, peer, source("send")))
  check_host_input(tensor, "send");
  MPI_Request request;
  check_mpi(MPI_Isend(tensor.data_ptr(), int_count(tensor.nbytes(), "send"), MPI_BYTE, peer, tag, comm_, &request),
            "send");
  return mpi_work("send", {request}, {tensor});
}

Work Communicator::irecv(at::Tensor& tensor, int peer, int tag) {
  count("recv", tensor.nbytes());
  LT_ON_DEVICE(tensor, recv(tensor, peer, source("recv")))
  check_host_input(tensor, "recv");
  MPI_Request request;
  check_mpi(MPI_Irecv(tensor.data_ptr(), int_count(tensor.nbytes(), "recv"), MPI_BYTE, peer, tag, comm_, &request),
            "recv");
  return mpi_work("recv", {request}, {tensor});
}

void Communicator::barrier() {
  count("barrier", 0);
  MPI_Request request;
  check_mpi(MPI_Ibarrier(comm_, &request), "barrier");
  mpi_work("barrier", {request}, {}).wait();
}

}  // namespace lt
