#include "parallel/comm/nccl_communicator.h"

#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <nccl.h>

#include <cstring>
#include <string>

#include "core/util/error.h"

namespace lt {
namespace {

void check_nccl(ncclResult_t result, const char* what) {
  if (result != ncclSuccess) fail(std::string("NCCL ") + what + " failed: " + ncclGetErrorString(result));
}

ncclDataType_t nccl_type(at::ScalarType type) {
  switch (type) {
    case at::kFloat: return ncclFloat32;
    case at::kBFloat16: return ncclBfloat16;
    case at::kHalf: return ncclFloat16;
    case at::kDouble: return ncclFloat64;
    case at::kLong: return ncclInt64;
    case at::kInt: return ncclInt32;
    case at::kByte: return ncclUint8;
    default: fail(std::string("NCCL: unsupported dtype ") + c10::toString(type));
  }
}

}  // namespace

NcclUniqueId NcclCommunicator::create_id() {
  static_assert(sizeof(ncclUniqueId) == sizeof(NcclUniqueId));
  ncclUniqueId id;
  check_nccl(ncclGetUniqueId(&id), "ncclGetUniqueId");
  NcclUniqueId bytes;
  std::memcpy(bytes.data(), &id, sizeof(id));
  return bytes;
}

NcclCommunicator::NcclCommunicator(const NcclUniqueId& id_bytes, int rank, int size, int device)
    : rank_(rank), size_(size) {
  c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(device));
  ncclUniqueId id;
  std::memcpy(&id, id_bytes.data(), sizeof(id));
  ncclComm_t comm;
  check_nccl(ncclCommInitRank(&comm, size, id, rank), "ncclCommInitRank");
  comm_ = comm;
}

NcclCommunicator::~NcclCommunicator() {
  if (comm_) ncclCommDestroy(static_cast<ncclComm_t>(comm_));
}

void NcclCommunicator::all_reduce_sum(at::Tensor& tensor) {
  check(tensor.is_cuda() && tensor.is_contiguous(), "NCCL all-reduce needs a contiguous CUDA tensor");
  c10::cuda::CUDAGuard guard(tensor.device());
  auto stream = c10::cuda::getCurrentCUDAStream(tensor.device().index());
  check_nccl(ncclAllReduce(tensor.data_ptr(), tensor.data_ptr(), tensor.numel(), nccl_type(tensor.scalar_type()),
                           ncclSum, static_cast<ncclComm_t>(comm_), stream.stream()),
             "ncclAllReduce");
}

}  // namespace lt
