#include "offload/chunks/chunk_manager.h"

#include <torch/csrc/autograd/grad_mode.h>

#include <algorithm>

#include "core/util/error.h"
#include "core/util/trace.h"
#include "core/util/logger.h"

namespace lt {
namespace {

at::Tensor view_of(const at::Tensor& flat, int64_t offset, const at::Tensor& like) {
  return flat.narrow(0, offset, like.numel()).view(like.sizes());
}

}  // namespace

struct ChunkManager::Chunk {
  std::vector<at::Tensor> params;  // the model's parameters
  std::vector<int64_t> offsets;
  int64_t numel = 0;
  // Host, padded so the replicas split them evenly; values and grads are
  // their first numel elements.
  at::Tensor padded_values, padded_grads;
  at::Tensor values, grads;
  int slot = -1;  // resident in this device slot
  bool persistent = false;
  size_t pending = 0;  // gradients still to come from a running backward
  int64_t last_used = 0;
  // The step's gradient reduction: in flight (with ZeRO-1 into `reduced`),
  // then settled with this rank's sum of squares.
  Work reduction;
  at::Tensor reduced;
  bool reducing = false, settled = false;
  double square_sum = 0;
};

struct ChunkManager::Slot {
  at::Tensor values, grads;  // device
  int chunk = -1;
};

int64_t ChunkManager::required_bytes(const std::vector<int64_t>& chunk_bytes, int64_t persist, int64_t buffers) {
  int64_t total = 0, largest = 0;
  for (size_t i = 0; i < chunk_bytes.size(); ++i) {
    if (static_cast<int64_t>(i) < persist) total += 2 * chunk_bytes[i];  // values and gradients
    else largest = std::max(largest, chunk_bytes[i]);
  }
  return total + buffers * 2 * largest;
}

ChunkManager::ChunkManager(const std::vector<std::pair<int64_t, std::vector<NamedParameter>>>& layers,
                           at::Device device, Communicator& replicas, ChunkOptions options)
    : device_(device), replicas_(replicas), shard_(options.shard_optimizer), compute_(options.compute) {
  // Whole layers, in execution order, until a chunk's device copy reaches chunk_bytes.
  const int64_t element = static_cast<int64_t>(c10::elementSize(compute_));
  for (const auto& [layer, params] : layers) {
    int64_t numel = 0;
    for (const auto& p : params) numel += p.tensor.numel();
    if (chunks_.empty() || (chunks_.back()->numel + numel) * element > options.chunk_bytes)
      chunks_.push_back(std::make_unique<Chunk>());
    auto& c = *chunks_.back();
    chunk_of_layer_[layer] = chunks_.size() - 1;
    for (const auto& p : params) {
      c.params.push_back(p.tensor), c.offsets.push_back(c.numel);
      c.numel += p.tensor.numel();
      host_params_.push_back({p.name, at::Tensor()});
    }
  }
  at::NoGradGuard no_grad;
  const auto host = at::TensorOptions().dtype(at::kFloat).pinned_memory(device.is_cuda());
  size_t named = 0;
  for (size_t i = 0; i < chunks_.size(); ++i) {
    auto& c = *chunks_[i];
    const int64_t padded = (c.numel + replicas_.size() - 1) / replicas_.size() * replicas_.size();
    c.padded_values = at::zeros({padded}, host);
    c.padded_grads = at::zeros({padded}, host);
    c.values = c.padded_values.narrow(0, 0, c.numel);
    c.grads = c.padded_grads.narrow(0, 0, c.numel);
    for (size_t k = 0; k < c.params.size(); ++k) {
      auto& p = c.params[k];
      view_of(c.values, c.offsets[k], p).copy_(p);
      auto& master = host_params_[named++].tensor;
      master = view_of(c.values, c.offsets[k], p);
      master.mutable_grad() = view_of(c.grads, c.offsets[k], p);
      hooks_.add(p, [this, i] { on_gradient(i); });
    }
    evict(i);
  }
  for (size_t i = 0, first = 0; i < chunks_.size(); ++i) {
    const size_t count = chunk_segments(i).size();
    segment_range_.push_back({first, first + count});
    first += count;
  }
  budget_bytes_ = options.budget_bytes;
  configure(options.persist, options.buffers);
}

std::vector<int64_t> ChunkManager::chunk_bytes() const {
  std::vector<int64_t> sizes;
  for (const auto& c : chunks_) sizes.push_back(c->numel * static_cast<int64_t>(c10::elementSize(compute_)));
  return sizes;
}

void ChunkManager::configure(int64_t persist, int64_t buffers) {
  const auto sizes = chunk_bytes();
  persist = std::min<int64_t>(persist, chunk_count());
  buffers = chunk_count() > persist ? std::max<int64_t>(1, buffers) : 0;
  const int64_t needed = required_bytes(sizes, persist, buffers);
  if (budget_bytes_ > 0 && needed > budget_bytes_)
    fail("memory.device_budget_gb: the chunked model state needs " + human_bytes(static_cast<double>(needed)) +
         " on the device (" + std::to_string(persist) + " persistent chunks + " + std::to_string(buffers) +
         " buffers), over the budget of " + human_bytes(static_cast<double>(budget_bytes_)) +
         ": lower memory.n_persist or memory.n_buffer, or raise the budget to at least " +
         human_bytes(static_cast<double>(required_bytes(sizes, 0, 1))));
  // The device copies of the old layout are current (refresh() follows
  // every update): the host copies need nothing, the buffers go.
  for (size_t i = 0; i < chunks_.size(); ++i) {
    chunks_[i]->persistent = false;
    evict(i);
  }
  slots_.clear();
  // Device memory, all of it now: persistent chunks' own buffers, then the shared ones.
  const auto on_device = at::TensorOptions().dtype(compute_).device(device_);
  int64_t largest = 0;
  for (size_t i = persist; i < chunks_.size(); ++i) largest = std::max(largest, chunks_[i]->numel);
  for (int64_t i = 0; i < persist + buffers; ++i) {
    const int64_t numel = i < persist ? chunks_[i]->numel : largest;
    slots_.push_back(std::make_unique<Slot>(Slot{at::empty({numel}, on_device), at::zeros({numel}, on_device)}));
  }
  device_bytes_ = needed;
  for (int64_t i = 0; i < persist; ++i) {
    chunks_[i]->persistent = true;
    make_resident(i);
  }
}

ChunkManager::~ChunkManager() = default;

// The model's parameters point at the chunk's device buffer.
void ChunkManager::make_resident(size_t index) {
  auto& c = *chunks_[index];
  c.last_used = ++clock_;
  if (c.slot >= 0) return;
  LT_TRACE_SCOPE("chunk_fetch");
  int chosen = -1;
  for (size_t s = 0; s < slots_.size(); ++s) {
    const int holder = slots_[s]->chunk;
    if (holder >= 0 && (chunks_[holder]->persistent || chunks_[holder]->pending > 0)) continue;
    if (holder < 0) {
      chosen = static_cast<int>(s);
      break;
    }
    if (holder != static_cast<int>(index) &&
        (chosen < 0 || chunks_[holder]->last_used < chunks_[slots_[chosen]->chunk]->last_used))
      chosen = static_cast<int>(s);
  }
  LT_CHECK(chosen >= 0,
           "chunk manager: no device buffer is free (every one holds a chunk in backward): raise memory.n_buffer");
  auto& slot = *slots_[chosen];
  if (slot.chunk >= 0) evict(slot.chunk);
  at::NoGradGuard no_grad;
  slot.values.narrow(0, 0, c.numel).copy_(c.values, /*non_blocking=*/true);
  slot.grads.narrow(0, 0, c.numel).zero_();
  for (size_t k = 0; k < c.params.size(); ++k) {
    auto& p = c.params[k];
    p.set_data(view_of(slot.values, c.offsets[k], p));
    p.mutable_grad() = view_of(slot.grads, c.offsets[k], p);
    hooks_.follow(p);  // a new device or dtype gave it a new gradient accumulator
  }
  slot.chunk = static_cast<int>(index);
  c.slot = chosen;
  fetches_.push_back(static_cast<int64_t>(index));
}

// The model's parameters point at the host copy again (on a device build,
// using one of them before make_resident fails loudly: it is on the host).
void ChunkManager::evict(size_t index) {
  auto& c = *chunks_[index];
  for (size_t k = 0; k < c.params.size(); ++k) {
    auto& p = c.params[k];
    p.set_data(view_of(c.values, c.offsets[k], p));
    p.mutable_grad() = view_of(c.grads, c.offsets[k], p);
  }
  if (c.slot >= 0) slots_[c.slot]->chunk = -1;
  c.slot = -1;
}

void ChunkManager::use(int64_t layer) {
  const size_t index = chunk_of_layer_.at(layer);
  make_resident(index);
  // Recomputation (autograd on) walks backward; forward walks forward.
  const bool backward = torch::autograd::GradMode::is_enabled();
  if (backward) chunks_[index]->pending = chunks_[index]->params.size();
  const int64_t next = static_cast<int64_t>(index) + (backward ? -1 : 1);
  if (next >= 0 && next < chunk_count() && chunks_[next]->slot < 0) {
    const bool spare = std::any_of(slots_.begin(), slots_.end(), [&](const auto& s) {
      return s->chunk < 0 ||
             (s->chunk != static_cast<int>(index) && !chunks_[s->chunk]->persistent && chunks_[s->chunk]->pending == 0);
    });
    if (spare) make_resident(next);
  }
}

// A gradient of the chunk has been accumulated on the device; once all have,
// they join the host gradients and the chunk may leave.
void ChunkManager::on_gradient(size_t index) {
  auto& c = *chunks_[index];
  if (c.pending == 0 || --c.pending > 0 || c.slot < 0) return;
  auto& slot = *slots_[c.slot];
  at::NoGradGuard no_grad;
  c.grads.add_(slot.grads.narrow(0, 0, c.numel).to(at::kCPU));
  slot.grads.narrow(0, 0, c.numel).zero_();
  if (!armed_) return;
  start_reduction(index);
  if (on_complete_) on_complete_(index);
}

void ChunkManager::zero_grad() {
  fetches_.clear();  // a step's record, not a run's
  for (auto& c : chunks_) {
    c->grads.zero_();
    c->reducing = c->settled = false;
  }
}

at::Tensor ChunkManager::mine(const at::Tensor& flat) const {
  if (!sharded()) return flat;
  const int64_t shard = flat.numel() / replicas_.size();
  return flat.narrow(0, replicas_.rank() * shard, shard);
}

std::vector<ParamSegment> ChunkManager::chunk_segments(size_t index) const {
  size_t named = 0;
  for (size_t i = 0; i < index; ++i) named += chunks_[i]->params.size();
  const auto& c = *chunks_[index];
  const int64_t shard = c.padded_values.numel() / replicas_.size();
  const int64_t lo = sharded() ? replicas_.rank() * shard : 0, hi = sharded() ? lo + shard : c.numel;
  std::vector<ParamSegment> out;
  for (size_t k = 0; k < c.params.size(); ++k)
    if (auto s = segment_within(host_params_[named + k], c.offsets[k], lo, hi)) out.push_back(*s);
  return out;
}

std::vector<ParamSegment> ChunkManager::segments() const {
  std::vector<ParamSegment> out;
  for (size_t i = 0; i < chunks_.size(); ++i)
    for (auto& s : chunk_segments(i)) out.push_back(std::move(s));
  return out;
}

void ChunkManager::arm() { armed_ = true; }

void ChunkManager::start_reduction(size_t index) {
  auto& c = *chunks_[index];
  c.reducing = true;
  if (replicas_.size() == 1) return;
  if (!sharded()) {
    c.reduction = replicas_.all_reduce_async(c.padded_grads);
    return;
  }
  c.reduced = at::empty({c.padded_grads.numel() / replicas_.size()}, c.padded_grads.options());
  c.reduction = replicas_.reduce_scatter_async(c.padded_grads, c.reduced);
}

void ChunkManager::settle(size_t index) {
  auto& c = *chunks_[index];
  if (c.settled) return;
  if (!c.reducing) start_reduction(index);
  c.reduction.wait();
  if (c.reduced.defined()) {
    mine(c.padded_grads).copy_(c.reduced);
    c.reduced = at::Tensor();
  }
  c.square_sum = mine(c.padded_grads).to(at::kDouble).pow(2).sum().item<double>();
  c.settled = true;
}

void ChunkManager::reduce() {
  for (size_t i = 0; i < chunks_.size(); ++i) settle(i);
  armed_ = false;
}

double ChunkManager::grad_square_sum() {
  double sum = 0;
  for (const auto& c : chunks_) sum += c->square_sum;
  auto total = at::full({1}, sum, at::kDouble);
  if (sharded()) replicas_.all_reduce(total);
  return total.item<double>();
}

void ChunkManager::scale_grads(double factor) {
  for (auto& c : chunks_) mine(c->padded_grads).mul_(factor);
}

void ChunkManager::refresh() {
  at::NoGradGuard no_grad;
  if (sharded())
    for (auto& c : chunks_) replicas_.all_gather_async(mine(c->padded_values).clone(), c->padded_values).wait();
  for (auto& c : chunks_)
    if (c->slot >= 0) slots_[c->slot]->values.narrow(0, 0, c->numel).copy_(c->values);
}

void ChunkManager::with_masters(const std::function<void()>& fn) {
  for (size_t i = 0; i < chunks_.size(); ++i) evict(i);
  fn();
  for (size_t i = 0; i < chunks_.size(); ++i)
    if (chunks_[i]->persistent) make_resident(i);
}

}  // namespace lt
