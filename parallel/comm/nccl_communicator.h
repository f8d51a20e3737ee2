// NCCL communicator for device tensors (the CUDA path). The mesh issue wraps
// it, together with an MPI communicator for host tensors, in one type; the
// unique id it needs is created on one rank and broadcast over MPI.
#pragma once
#include <ATen/ATen.h>

#include <array>

namespace lt {

using NcclUniqueId = std::array<char, 128>;

class NcclCommunicator {
 public:
  // Call on one rank, then share the bytes with the others.
  static NcclUniqueId create_id();

  NcclCommunicator(const NcclUniqueId& id, int rank, int size, int device);
  ~NcclCommunicator();
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  // In place, on the tensor's device's current stream.
  void all_reduce_sum(at::Tensor& tensor);

  int rank() const { return rank_; }
  int size() const { return size_; }

 private:
  void* comm_ = nullptr;  // ncclComm_t, kept opaque so this header needs no nccl.h
  int rank_, size_;
};

}  // namespace lt
