#include "parallel/comm/nccl_communicator.h"

#include <ATen/cuda/CUDAEvent.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <nccl.h>

#include <atomic>
#include <cstring>
#include <string>
#include <thread>

#include "core/util/error.h"
#include "parallel/comm/communicator.h"

namespace lt {
namespace {

void check_nccl(ncclResult_t result, const char* what) {
  if (result != ncclSuccess) fail(std::string("NCCL ") + what + " failed: " + ncclGetErrorString(result));
}

ncclDataType_t nccl_type(at::ScalarType type) {
  switch (type) {
    case at::kFloat:
      return ncclFloat32;
    case at::kBFloat16:
      return ncclBfloat16;
    case at::kHalf:
      return ncclFloat16;
    case at::kDouble:
      return ncclFloat64;
    case at::kLong:
      return ncclInt64;
    case at::kInt:
      return ncclInt32;
    case at::kByte:
      return ncclUint8;
    default:
      fail(std::string("NCCL: unsupported dtype ") + c10::toString(type));
  }
}

ncclRedOp_t nccl_op(ReduceOp op) { return op == ReduceOp::max ? ncclMax : op == ReduceOp::avg ? ncclAvg : ncclSum; }

char* bytes_of(const at::Tensor& t) { return static_cast<char*>(t.data_ptr()); }

}  // namespace

struct NcclCommunicator::Stream {
  c10::cuda::CUDAStream stream;
};

NcclUniqueId NcclCommunicator::create_id() {
  static_assert(sizeof(ncclUniqueId) == sizeof(NcclUniqueId));
  ncclUniqueId id;
  check_nccl(ncclGetUniqueId(&id), "ncclGetUniqueId");
  NcclUniqueId bytes;
  std::memcpy(bytes.data(), &id, sizeof(id));
  return bytes;
}

NcclCommunicator::NcclCommunicator(const NcclUniqueId& id_bytes, int rank, int size, int device, Work::Source init)
    : rank_(rank), size_(size) {
  ncclUniqueId id;
  std::memcpy(&id, id_bytes.data(), sizeof(id));
  // ncclCommInitRank returns once every rank of the group has joined, with
  // no timeout of its own: it runs on a thread of its own so that the
  // watchdog names a group that never completes instead of hanging. That
  // thread is left behind then, as the job ends.
  struct Joining {
    std::atomic<bool> done{false};
    ncclResult_t result = ncclSuccess;
    ncclComm_t comm = nullptr;
  };
  auto joining = std::make_shared<Joining>();
  std::thread([joining, id, size, rank, device] {
    c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(device));
    joining->result = ncclCommInitRank(&joining->comm, size, id, rank);
    joining->done = true;
  }).detach();
  Work(std::move(init), [joining] { return joining->done.load(); }).wait();
  check_nccl(joining->result, "ncclCommInitRank");
  comm_ = joining->comm;
  stream_ = std::make_unique<Stream>(Stream{c10::cuda::getStreamFromPool(true, static_cast<c10::DeviceIndex>(device))});
}

NcclCommunicator::~NcclCommunicator() {
  if (comm_) ncclCommDestroy(static_cast<ncclComm_t>(comm_));
}

template <class Call>
Work NcclCommunicator::enqueue(Work::Source source, std::vector<at::Tensor> tensors, Call&& call) {
  LT_CHECK(comm_ != nullptr, source.op + " on group '" + source.group + "': its NCCL communicator was aborted");
  for (const auto& t : tensors)
    LT_CHECK(t.is_cuda() && t.is_contiguous(), source.op + ": NCCL needs contiguous CUDA tensors");
  const auto device = tensors.front().device();
  c10::cuda::CUDAGuard guard(device);
  auto compute = c10::cuda::getCurrentCUDAStream(device.index());
  at::cuda::CUDAEvent inputs_ready;
  inputs_ready.record(compute);
  inputs_ready.block(stream_->stream);
  call(static_cast<ncclComm_t>(comm_), stream_->stream.stream());
  // The allocator must not reuse these blocks until the comm stream is done.
  for (const auto& t : tensors) c10::cuda::CUDACachingAllocator::recordStream(t.storage().data_ptr(), stream_->stream);
  auto done = std::make_shared<at::cuda::CUDAEvent>();
  done->record(stream_->stream);
  return Work(
      std::move(source), [done] { return done->query(); }, [done, compute] { done->block(compute); });
}

Work NcclCommunicator::all_reduce(at::Tensor& t, ReduceOp op, Work::Source source) {
  return enqueue(std::move(source), {t}, [&](ncclComm_t comm, cudaStream_t stream) {
    check_nccl(
        ncclAllReduce(t.data_ptr(), t.data_ptr(), t.numel(), nccl_type(t.scalar_type()), nccl_op(op), comm, stream),
        "all_reduce");
  });
}

Work NcclCommunicator::all_gather(const at::Tensor& input, at::Tensor& output, Work::Source source) {
  return enqueue(std::move(source), {input, output}, [&](ncclComm_t comm, cudaStream_t stream) {
    check_nccl(ncclAllGather(input.data_ptr(), output.data_ptr(), input.nbytes(), ncclUint8, comm, stream),
               "all_gather");
  });
}

Work NcclCommunicator::reduce_scatter(const at::Tensor& input, at::Tensor& output, ReduceOp op, Work::Source source) {
  return enqueue(std::move(source), {input, output}, [&](ncclComm_t comm, cudaStream_t stream) {
    check_nccl(ncclReduceScatter(input.data_ptr(), output.data_ptr(), output.numel(), nccl_type(input.scalar_type()),
                                 nccl_op(op), comm, stream),
               "reduce_scatter");
  });
}

Work NcclCommunicator::all_to_all(const at::Tensor& input, at::Tensor& output, const std::vector<int64_t>& send_bytes,
                                  const std::vector<int64_t>& recv_bytes, Work::Source source) {
  return enqueue(std::move(source), {input, output}, [&](ncclComm_t comm, cudaStream_t stream) {
    int64_t send_at = 0, recv_at = 0;
    check_nccl(ncclGroupStart(), "group start");
    for (int peer = 0; peer < size_; ++peer) {
      check_nccl(ncclSend(bytes_of(input) + send_at, send_bytes[peer], ncclUint8, peer, comm, stream), "send");
      check_nccl(ncclRecv(bytes_of(output) + recv_at, recv_bytes[peer], ncclUint8, peer, comm, stream), "recv");
      send_at += send_bytes[peer], recv_at += recv_bytes[peer];
    }
    check_nccl(ncclGroupEnd(), "all_to_all");
  });
}

Work NcclCommunicator::broadcast(at::Tensor& t, int root, Work::Source source) {
  return enqueue(std::move(source), {t}, [&](ncclComm_t comm, cudaStream_t stream) {
    check_nccl(ncclBroadcast(t.data_ptr(), t.data_ptr(), t.nbytes(), ncclUint8, root, comm, stream), "broadcast");
  });
}

Work NcclCommunicator::exchange(const std::vector<Message>& sends, const std::vector<Message>& receives,
                                Work::Source source) {
  std::vector<at::Tensor> tensors;
  for (const auto* messages : {&sends, &receives})
    for (const auto& m : *messages) tensors.push_back(m.tensor);
  return enqueue(std::move(source), std::move(tensors), [&](ncclComm_t comm, cudaStream_t stream) {
    check_nccl(ncclGroupStart(), "group start");
    for (const auto& m : receives)
      check_nccl(ncclRecv(m.tensor.data_ptr(), m.tensor.nbytes(), ncclUint8, m.peer, comm, stream), "recv");
    for (const auto& m : sends)
      check_nccl(ncclSend(m.tensor.data_ptr(), m.tensor.nbytes(), ncclUint8, m.peer, comm, stream), "send");
    check_nccl(ncclGroupEnd(), "exchange");
  });
}

void NcclCommunicator::abort() {
  if (comm_) ncclCommAbort(static_cast<ncclComm_t>(comm_));
  comm_ = nullptr;
}

}  // namespace lt
