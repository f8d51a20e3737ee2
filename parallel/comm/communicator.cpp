#include "parallel/comm/communicator.h"

#include <algorithm>
#include <climits>
#include <cstring>
#include <mutex>
#include <numeric>
#include <set>

#include "core/util/error.h"
#include "core/util/trace.h"
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
    case at::kFloat:
      return MPI_FLOAT;
    case at::kDouble:
      return MPI_DOUBLE;
    case at::kLong:
      return MPI_INT64_T;
    case at::kInt:
      return MPI_INT32_T;
    case at::kByte:
      return MPI_UINT8_T;
    default:
      fail(std::string("host reductions support bfloat16, float32/64 and integer tensors, not ") + c10::toString(type));
  }
}

// MPI has no bf16: bf16 sums travel as 16-bit words through an operation of
// our own, each pair added in fp32 and rounded once (as NCCL's bf16 sum).
void bf16_sum(void* in, void* inout, int* length, MPI_Datatype*) {
  const auto* a = static_cast<const c10::BFloat16*>(in);
  auto* b = static_cast<c10::BFloat16*>(inout);
  for (int i = 0; i < *length; ++i) b[i] = static_cast<float>(a[i]) + static_cast<float>(b[i]);
}

struct MpiReduction {
  MPI_Datatype type;
  MPI_Op op;
};

MpiReduction mpi_reduction(at::ScalarType type, ReduceOp op) {
  if (type == at::kBFloat16) {
    LT_CHECK(op != ReduceOp::max, "host reductions of bf16 tensors support sum and average, not max");
    static const MPI_Op sum = [] {
      MPI_Op created;
      MPI_Op_create(&bf16_sum, /*commute=*/1, &created);
      return created;
    }();
    return {MPI_UINT16_T, sum};
  }
  return {reduce_type(type), op == ReduceOp::max ? MPI_MAX : MPI_SUM};
}

int int_count(int64_t n, const char* op) {
  if (n > INT_MAX)
    fail(std::string(op) + ": " + std::to_string(n) + " elements exceed one MPI call; use smaller buckets");
  return static_cast<int>(n);
}

int64_t row_bytes(const at::Tensor& t) { return t.dim() == 0 ? t.element_size() : t.nbytes() / t.size(0); }

void check_host_input(const at::Tensor& t, const char* op) {
  LT_CHECK(t.is_contiguous(), std::string(op) + ": the tensor must be contiguous");
}

// Finishes an average on the tensor the sum landed in.
std::function<void()> averaging(ReduceOp op, at::Tensor target, int size) {
  if (op != ReduceOp::avg) return {};
  return [target, size]() mutable { target.div_(size); };
}

// Each call is a span on the worker thread that runs it, named by its
// operation and group (lt::all_reduce dp_sp).
std::string span_name(const char* op, const std::string& group) { return std::string("lt::") + op + " " + group; }

// The live communicators, for abort_all. Never destroyed: communicators
// held by statics (the program's MPI session) outlive function statics.
struct Live {
  std::mutex mutex;
  std::set<Communicator*> all;
};
Live& live() {
  static auto* registry = new Live;
  return *registry;
}

}  // namespace

Communicator::Communicator(MPI_Comm comm, std::string name, double timeout_s, DeviceTransport transport)
    : comm_(comm), name_(std::move(name)), timeout_s_(timeout_s), transport_(transport),
      enabled_(transport == DeviceTransport::host), worker_(std::make_unique<MpiWorker>()) {
  MPI_Comm_rank(comm_, &rank_);
  MPI_Comm_size(comm_, &size_);
  MPI_Comm_rank(MPI_COMM_WORLD, &world_rank_);
  std::lock_guard<std::mutex> lock(live().mutex);
  live().all.insert(this);
}

Communicator::~Communicator() {
  {
    std::lock_guard<std::mutex> lock(live().mutex);
    live().all.erase(this);
  }
  worker_.reset();  // its last calls finish on this communicator first
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized && aborted_.empty() && comm_ != MPI_COMM_WORLD && comm_ != MPI_COMM_SELF && comm_ != MPI_COMM_NULL)
    MPI_Comm_free(&comm_);
}

void Communicator::enable_device(int device) {
  LT_CHECK(transport_ != DeviceTransport::host, "group '" + name_ + "' carries no device tensors");
  LT_CHECK(!enabled_, "group '" + name_ + "': its device transport is enabled already");
  if (transport_ == DeviceTransport::emulated_nccl) {
    worker_->set_in_order(true);
  } else {
#ifdef LT_WITH_CUDA
    NcclUniqueId id{};
    if (rank_ == 0) id = NcclCommunicator::create_id();
    // On the heap, held by the call: a broadcast the watchdog gives up on
    // may still write into it.
    auto bytes = at::empty({static_cast<int64_t>(id.size())}, at::kByte);
    std::memcpy(bytes.data_ptr(), id.data(), id.size());
    submit("broadcast", [bytes, comm = comm_] {
      check_mpi(MPI_Bcast(bytes.data_ptr(), static_cast<int>(bytes.numel()), MPI_BYTE, 0, comm), "broadcast");
    }).wait();
    std::memcpy(id.data(), bytes.data_ptr(), id.size());
    nccl_ = std::make_unique<NcclCommunicator>(id, rank_, size_, device, source("NCCL initialisation"));
#else
    (void)device;
    fail("group '" + name_ + "': NCCL needs a CUDA build");
#endif
  }
  enabled_ = true;
}

void Communicator::abort(const std::string& reason) {
  if (!aborted_.empty()) return;
  aborted_ = "group '" + name_ + "' was aborted: " + reason;
  worker_->abort(aborted_);
#ifdef LT_WITH_CUDA
  if (nccl_) nccl_->abort();
#endif
}

void Communicator::abort_all(const std::string& reason) {
  std::lock_guard<std::mutex> lock(live().mutex);
  for (Communicator* c : live().all) c->abort(reason);
}

void Communicator::check_ready(const char* op) const {
  if (!aborted_.empty()) fail(std::string(op) + ": " + aborted_);
  if (!enabled_)
    fail(std::string(op) + " on group '" + name_ + "' before its device transport (" +
         (transport_ == DeviceTransport::nccl ? "NCCL" : "emulated NCCL") +
         ") was enabled: a device-bound group takes no operation until the device is chosen "
         "(Mesh::enable_device, before any model or state is built)");
}

#ifdef LT_WITH_CUDA
#define LT_ON_DEVICE(tensor, call)                                                                   \
  if ((tensor).is_cuda()) {                                                                          \
    LT_CHECK(nccl_ != nullptr, "group '" + name_ + "' has no NCCL communicator for device tensors"); \
    return nccl_->call;                                                                              \
  }
#else
#define LT_ON_DEVICE(tensor, call) \
  LT_CHECK(!(tensor).is_cuda(), "device tensors need a CUDA build (group '" + name_ + "')");
#endif

Work::Source Communicator::source(const char* op) const { return {op, name_, rank_, size_, world_rank_, timeout_s_}; }

Work Communicator::submit(const char* op, std::function<void()> call, std::function<void()> finish) {
  auto traced = [span = span_name(op, name_), call = std::move(call)] {
    RECORD_USER_SCOPE(span);
    call();
  };
  return Work(source(op), worker_->run(std::move(traced)), std::move(finish));
}

Work Communicator::post(const char* op, const std::vector<Message>& sends, const std::vector<Message>& receives) {
  // NCCL's emulation: synchronous sends, and messages between two ranks
  // matched in the order they were issued, as NCCL matches them.
  const bool nccl_order = transport_ == DeviceTransport::emulated_nccl;
  auto call = [span = span_name(op, name_), sends, receives, nccl_order, comm = comm_] {
    RECORD_USER_SCOPE(span);
    std::vector<MPI_Request> requests;
    auto message = [&](const Message& m, bool send) {
      const int bytes = int_count(m.tensor.nbytes(), send ? "send" : "recv");
      const int tag = nccl_order ? 0 : m.tag;
      auto& request = requests.emplace_back();
      void* data = m.tensor.data_ptr();
      check_mpi(send ? (nccl_order ? MPI_Issend : MPI_Isend)(data, bytes, MPI_BYTE, m.peer, tag, comm, &request)
                     : MPI_Irecv(data, bytes, MPI_BYTE, m.peer, tag, comm, &request),
                send ? "send" : "recv");
    };
    for (const auto& m : receives) message(m, false);
    for (const auto& m : sends) message(m, true);
    return requests;
  };
  return Work(source(op), worker_->post(std::move(call)));
}

Work Communicator::all_reduce_async(at::Tensor& tensor, ReduceOp op) {
  check_ready("all_reduce");
  count("all_reduce", tensor.nbytes());
  LT_ON_DEVICE(tensor, all_reduce(tensor, op, source("all_reduce")))
  check_host_input(tensor, "all_reduce");
  const int n = int_count(tensor.numel(), "all_reduce");
  const auto reduction = mpi_reduction(tensor.scalar_type(), op);
  return submit(
      "all_reduce",
      [=, comm = comm_] {
        check_mpi(MPI_Allreduce(MPI_IN_PLACE, tensor.data_ptr(), n, reduction.type, reduction.op, comm), "all_reduce");
      },
      averaging(op, tensor, size_));
}

Work Communicator::all_gather_async(const at::Tensor& input, at::Tensor& output) {
  check_ready("all_gather");
  LT_CHECK(output.numel() == input.numel() * size_ && output.scalar_type() == input.scalar_type(),
           "all_gather: the output must hold group size x the input");
  count("all_gather", input.nbytes());
  LT_ON_DEVICE(input, all_gather(input, output, source("all_gather")))
  check_host_input(input, "all_gather");
  check_host_input(output, "all_gather");
  const int bytes = int_count(input.nbytes(), "all_gather");
  return submit("all_gather", [=, comm = comm_] {
    check_mpi(MPI_Allgather(input.data_ptr(), bytes, MPI_BYTE, output.data_ptr(), bytes, MPI_BYTE, comm), "all_gather");
  });
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
  check_ready("reduce_scatter");
  LT_CHECK(input.dim() > 0 && input.size(0) % size_ == 0 && output.numel() * size_ == input.numel(),
           "reduce_scatter: dim 0 of the input must split evenly over the " + std::to_string(size_) + " ranks of '" +
               name_ + "'");
  count("reduce_scatter", input.nbytes());
  LT_ON_DEVICE(input, reduce_scatter(input, output, op, source("reduce_scatter")))
  check_host_input(input, "reduce_scatter");
  check_host_input(output, "reduce_scatter");
  const int n = int_count(output.numel(), "reduce_scatter");
  const auto reduction = mpi_reduction(input.scalar_type(), op);
  return submit(
      "reduce_scatter",
      [=, comm = comm_] {
        check_mpi(MPI_Reduce_scatter_block(input.data_ptr(), output.data_ptr(), n, reduction.type, reduction.op, comm),
                  "reduce_scatter");
      },
      averaging(op, output, size_));
}

at::Tensor Communicator::reduce_scatter(const at::Tensor& input, ReduceOp op) {
  LT_CHECK(input.dim() > 0, "reduce_scatter: needs at least one dimension");
  auto sizes = input.sizes().vec();
  sizes[0] /= size_;
  auto output = at::empty(sizes, input.options());
  reduce_scatter_async(input, output, op).wait();
  return output;
}

at::Tensor Communicator::all_to_all(const at::Tensor& input) {
  LT_CHECK(input.dim() > 0 && input.size(0) % size_ == 0,
           "all_to_all: dim 0 (" + std::to_string(input.dim() ? input.size(0) : 0) + ") must split evenly over the " +
               std::to_string(size_) + " ranks of '" + name_ + "'");
  const int64_t rows = input.size(0) / size_;
  return all_to_all(input, std::vector<int64_t>(size_, rows), std::vector<int64_t>(size_, rows));
}

at::Tensor Communicator::all_to_all(const at::Tensor& input, const std::vector<int64_t>& send_rows,
                                    std::vector<int64_t> recv_rows) {
  check_ready("all_to_all");
  LT_CHECK(input.dim() > 0, "all_to_all: needs at least one dimension");
  LT_CHECK(static_cast<int>(send_rows.size()) == size_, "all_to_all: one send count per rank of '" + name_ + "'");
  LT_CHECK(std::accumulate(send_rows.begin(), send_rows.end(), int64_t{0}) == input.size(0),
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
    LT_CHECK(nccl_ != nullptr, "group '" + name_ + "' has no NCCL communicator for device tensors");
    nccl_->all_to_all(input, output, send_bytes, recv_bytes, source("all_to_all")).wait();
    return output;
  }
#endif
  check_host_input(input, "all_to_all");
  // Byte counts and offsets as MPI wants them: send, send offsets, receive,
  // receive offsets; the call owns them until it completes.
  auto counts = std::make_shared<std::vector<int>>(4 * size_);
  int64_t send_at = 0, recv_at = 0;
  for (int i = 0; i < size_; ++i) {
    (*counts)[i] = int_count(send_bytes[i], "all_to_all"), (*counts)[size_ + i] = int_count(send_at, "all_to_all");
    (*counts)[2 * size_ + i] = int_count(recv_bytes[i], "all_to_all");
    (*counts)[3 * size_ + i] = int_count(recv_at, "all_to_all");
    send_at += send_bytes[i], recv_at += recv_bytes[i];
  }
  // Equal splits take MPI's all-to-all proper: its algorithms beat alltoallv's.
  const bool even =
      std::all_of(counts->begin(), counts->begin() + size_, [&](int c) { return c == (*counts)[0]; }) &&
      std::all_of(counts->begin() + 2 * size_, counts->begin() + 3 * size_, [&](int c) { return c == (*counts)[0]; });
  submit("all_to_all", [counts, even, input, output, n = size_, comm = comm_] {
    const int* c = counts->data();
    check_mpi(even ? MPI_Alltoall(input.data_ptr(), c[0], MPI_BYTE, output.data_ptr(), c[0], MPI_BYTE, comm)
                   : MPI_Alltoallv(input.data_ptr(), c, c + n, MPI_BYTE, output.data_ptr(), c + 2 * n, c + 3 * n,
                                   MPI_BYTE, comm),
              "all_to_all");
  }).wait();
  return output;
}

Work Communicator::broadcast_async(at::Tensor& tensor, int root) {
  check_ready("broadcast");
  count("broadcast", tensor.nbytes());
  LT_ON_DEVICE(tensor, broadcast(tensor, root, source("broadcast")))
  check_host_input(tensor, "broadcast");
  const int bytes = int_count(tensor.nbytes(), "broadcast");
  return submit("broadcast", [=, comm = comm_] {
    check_mpi(MPI_Bcast(tensor.data_ptr(), bytes, MPI_BYTE, root, comm), "broadcast");
  });
}

Work Communicator::isend(const at::Tensor& tensor, int peer, int tag) { return exchange({{tensor, peer, tag}}, {}); }

Work Communicator::irecv(at::Tensor& tensor, int peer, int tag) { return exchange({}, {{tensor, peer, tag}}); }

Work Communicator::exchange(const std::vector<Message>& sends, const std::vector<Message>& receives) {
  const char* op = receives.empty() ? "send" : sends.empty() ? "recv" : "exchange";
  check_ready(op);
  bool device = false;
  for (const auto* messages : {&sends, &receives})
    for (const auto& m : *messages) {
      count(messages == &sends ? "send" : "recv", m.tensor.nbytes());
      int_count(m.tensor.nbytes(), op);  // refused before anything is posted
      LT_CHECK(m.peer >= 0 && m.peer < size_,
               std::string(op) + ": peer " + std::to_string(m.peer) + " is not a rank of group '" + name_ + "'");
      device = device || m.tensor.is_cuda();
    }
  if (device) {
#ifdef LT_WITH_CUDA
    LT_CHECK(nccl_ != nullptr, "group '" + name_ + "' has no NCCL communicator for device tensors");
    return nccl_->exchange(sends, receives, source(op));
#else
    fail("device tensors need a CUDA build (group '" + name_ + "')");
#endif
  }
  for (const auto* messages : {&sends, &receives})
    for (const auto& m : *messages) check_host_input(m.tensor, op);
  return post(op, sends, receives);
}

void Communicator::barrier() {
  check_ready("barrier");
  count("barrier", 0);
  submit("barrier", [comm = comm_] { check_mpi(MPI_Barrier(comm), "barrier"); }).wait();
}

}  // namespace lt
