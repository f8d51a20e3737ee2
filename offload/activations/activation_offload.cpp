#include "offload/activations/activation_offload.h"

#include <algorithm>

#ifdef LT_WITH_CUDA
#include <ATen/cuda/CUDAEvent.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace lt {

struct ActivationOffload::Entry {
  at::Tensor host;    // the input in host memory
  at::Tensor device;  // on its device again (prefetched), or the input itself on the host
  at::Device where{at::kCPU};
#ifdef LT_WITH_CUDA
  at::cuda::CUDAEvent copied;  // the last copy of this entry has finished
#endif
};

#ifdef LT_WITH_CUDA
struct ActivationOffload::Streams {
  std::map<int, c10::cuda::CUDAStream> copy;  // per device
  c10::cuda::CUDAStream& on(int device) {
    auto it = copy.find(device);
    if (it == copy.end()) it = copy.emplace(device, c10::cuda::getStreamFromPool(false, device)).first;
    return it->second;
  }
};
#else
struct ActivationOffload::Streams {};
#endif

ActivationOffload::ActivationOffload() : streams_(std::make_unique<Streams>()) {}
ActivationOffload::~ActivationOffload() = default;

int64_t ActivationOffload::put(const at::Tensor& x) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto entry = std::make_unique<Entry>();
  entry->where = x.device();
  if (!x.is_cuda()) {
    entry->device = x;  // already in host memory
  } else {
#ifdef LT_WITH_CUDA
    c10::cuda::CUDAGuard guard(x.device());
    auto& copy = streams_->on(x.get_device());
    at::cuda::CUDAEvent produced;
    produced.record(c10::cuda::getCurrentCUDAStream(x.get_device()));
    produced.block(copy);
    entry->host = at::empty(x.sizes(), x.options().device(at::kCPU).pinned_memory(true));
    {
      c10::cuda::CUDAStreamGuard on_copy(copy);
      entry->host.copy_(x, /*non_blocking=*/true);
    }
    // x's memory may be reused by compute only after the copy has read it.
    c10::cuda::CUDACachingAllocator::recordStream(x.storage().data_ptr(), copy);
    entry->copied.record(copy);
#endif
  }
  host_bytes_ += static_cast<int64_t>(x.nbytes());
  peak_host_bytes_ = std::max(peak_host_bytes_, host_bytes_);
  entries_[next_ticket_] = std::move(entry);
  return next_ticket_++;
}

// Starts bringing an entry back to its device (CUDA), ordered after its
// copy out.
void ActivationOffload::prefetch(Entry& entry) {
  if (entry.device.defined()) return;
#ifdef LT_WITH_CUDA
  c10::cuda::CUDAGuard guard(entry.where);
  auto& copy = streams_->on(entry.where.index());
  entry.copied.block(copy);
  c10::cuda::CUDAStreamGuard on_copy(copy);
  entry.device = entry.host.to(entry.where, /*non_blocking=*/true);
  entry.copied.record(copy);
#endif
}

at::Tensor ActivationOffload::take(int64_t ticket) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = entries_.find(ticket);
  TORCH_CHECK(it != entries_.end(), "activation offload: ticket ", ticket, " taken twice or never stored");
  auto entry = std::move(it->second);
  entries_.erase(it);
  prefetch(*entry);
  // Backward runs layers in reverse: the layer before is needed next.
  auto previous = entries_.find(ticket - 1);
  if (previous != entries_.end()) prefetch(*previous->second);
#ifdef LT_WITH_CUDA
  if (entry->where.is_cuda()) {
    entry->copied.block(c10::cuda::getCurrentCUDAStream(entry->where.index()));
    c10::cuda::CUDACachingAllocator::recordStream(entry->device.storage().data_ptr(),
                                                  c10::cuda::getCurrentCUDAStream(entry->where.index()));
  }
#endif
  host_bytes_ -= static_cast<int64_t>(entry->device.nbytes());
  return entry->device;
}

}  // namespace lt
