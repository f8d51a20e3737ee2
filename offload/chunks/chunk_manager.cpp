#include "offload/chunks/chunk_manager.h"

#include <torch/csrc/autograd/grad_mode.h>

#include <algorithm>

#include "core/util/error.h"
#include "core/util/trace.h"
#include "core/util/logger.h"
#include "parallel/data_parallel/flat_shards.h"

namespace lt {
namespace {

at::Tensor view_of(const at::Tensor& flat, int64_t offset, const std::vector<int64_t>& shape) {
  return flat.narrow(0, offset, c10::multiply_integers(shape)).view(shape);
}

}  // namespace

struct ChunkManager::Chunk {
  std::vector<at::Tensor> params;  // the model's parameters
  std::vector<std::vector<int64_t>> shapes;
  std::vector<int64_t> offsets;
  int64_t numel = 0;
  FlatShards flat;  // numel, cut into the replicas' shards
  // Host: the padded chunk, whose first numel elements are values and
  // grads; or with shard_state this rank's 1/R of it.
  at::Tensor host_values, host_grads;
  at::Tensor values, grads;
  int slot = -1;  // resident in this device slot
  bool persistent = false;
  int64_t first_layer = 0;   // backward leaves the chunk with it
  bool in_backward = false;  // recomputed in this backward, not yet left: its buffer stays
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
                           at::Device device, Communicator& replicas, ChunkOptions options,
                           std::shared_ptr<GradientHandoff> handoff, Communicator* gathers)
    : device_(device), replicas_(replicas), gathers_(gathers ? *gathers : replicas),
      shard_(options.shard_optimizer || options.shard_state), shard_state_(options.shard_state),
      compute_(options.compute) {
  LT_CHECK(handoff, "the chunk manager needs the model's gradient hand-off");
  // Whole layers, in execution order, until a chunk's device copy reaches chunk_bytes.
  const int64_t element = static_cast<int64_t>(c10::elementSize(compute_));
  for (const auto& [layer, params] : layers) {
    int64_t numel = 0;
    for (const auto& p : params) numel += p.tensor.numel();
    if (chunks_.empty() || (chunks_.back()->numel + numel) * element > options.chunk_bytes) {
      chunks_.push_back(std::make_unique<Chunk>());
      chunks_.back()->first_layer = layer;
    }
    auto& c = *chunks_.back();
    chunk_of_layer_[layer] = chunks_.size() - 1;
    for (const auto& p : params) {
      c.params.push_back(p.tensor), c.shapes.push_back(p.tensor.sizes().vec()), c.offsets.push_back(c.numel);
      c.numel += p.tensor.numel();
      host_params_.push_back({p.name, state_sharded() ? p.tensor : at::Tensor()});
    }
  }
  at::NoGradGuard no_grad;
  const auto host = at::TensorOptions().dtype(at::kFloat).pinned_memory(device.is_cuda());
  placeholder_ = at::empty({0}, host);
  size_t named = 0;
  for (size_t i = 0; i < chunks_.size(); ++i) {
    auto& c = *chunks_[i];
    c.flat = FlatShards(c.numel, replicas_);
    const int64_t held = state_sharded() ? c.flat.shard : c.flat.padded;
    c.host_values = at::zeros({held}, host);
    c.host_grads = at::zeros({held}, host);
    // Every replica built the same weights: each keeps its part.
    const auto whole = state_sharded() ? at::zeros({c.flat.padded}, host) : c.host_values;
    for (size_t k = 0; k < c.params.size(); ++k) view_of(whole, c.offsets[k], c.shapes[k]).copy_(c.params[k]);
    if (state_sharded()) {
      c.host_values.copy_(c.flat.mine(whole));
    } else {
      c.values = c.host_values.narrow(0, 0, c.numel);
      c.grads = c.host_grads.narrow(0, 0, c.numel);
      for (size_t k = 0; k < c.params.size(); ++k) {
        auto& master = host_params_[named + k].tensor;
        master = view_of(c.values, c.offsets[k], c.shapes[k]);
        master.mutable_grad() = view_of(c.grads, c.offsets[k], c.shapes[k]);
      }
    }
    named += c.params.size();
    evict(i);
  }
  for (size_t i = 0, first = 0; i < chunks_.size(); ++i) {
    const size_t count = chunk_segments(i).size();
    segment_range_.push_back({first, first + count});
    first += count;
  }
  budget_bytes_ = options.budget_bytes;
  configure(options.persist, options.buffers);
  listening_ = GradientHandoff::listen(handoff, [this](int64_t layer, bool final) { on_left(layer, final); });
}

int64_t ChunkManager::host_bytes() const {
  int64_t bytes = 0;
  for (const auto& c : chunks_) bytes += c->host_values.nbytes() + c->host_grads.nbytes();
  return bytes;
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
  // A gathered chunk fills its padded length.
  auto length = [this](const Chunk& c) { return state_sharded() ? c.flat.padded : c.numel; };
  int64_t largest = 0;
  for (size_t i = persist; i < chunks_.size(); ++i) largest = std::max(largest, length(*chunks_[i]));
  for (int64_t i = 0; i < persist + buffers; ++i) {
    const int64_t numel = i < persist ? length(*chunks_[i]) : largest;
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
    if (holder >= 0 && (chunks_[holder]->persistent || chunks_[holder]->in_backward)) continue;
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
  if (state_sharded()) {
    auto whole = slot.values.narrow(0, 0, c.flat.padded);
    gathers_.all_gather_async(c.host_values.to(slot.values.options()), whole).wait();
    slot.grads.narrow(0, 0, c.flat.padded).zero_();
  } else {
    slot.values.narrow(0, 0, c.numel).copy_(c.values, /*non_blocking=*/true);
    slot.grads.narrow(0, 0, c.numel).zero_();
  }
  point_parameters(c, slot.values, slot.grads);
  slot.chunk = static_cast<int>(index);
  c.slot = chosen;
  fetches_.push_back(static_cast<int64_t>(index));
}

// The parameters point into `values` and `grads` (a device slot, the host
// copy), or without values at the placeholder.
void ChunkManager::point_parameters(Chunk& c, const at::Tensor& values, const at::Tensor& grads) {
  for (size_t k = 0; k < c.params.size(); ++k) {
    auto& p = c.params[k];
    p.set_data(values.defined() ? view_of(values, c.offsets[k], c.shapes[k]) : placeholder_);
    p.mutable_grad() = grads.defined() ? view_of(grads, c.offsets[k], c.shapes[k]) : at::Tensor();
    // A new shape (the placeholder's) needs a new gradient accumulator.
    if (state_sharded()) renew_grad_accumulator(p);
  }
}

// The model's parameters point at the host copy again (on a device build,
// using one of them before make_resident fails loudly: it is on the host),
// or at the placeholder when the host holds only a shard.
void ChunkManager::evict(size_t index) {
  auto& c = *chunks_[index];
  if (state_sharded()) point_parameters(c, at::Tensor(), at::Tensor());
  else point_parameters(c, c.values, c.grads);
  if (c.slot >= 0) slots_[c.slot]->chunk = -1;
  c.slot = -1;
}

void ChunkManager::use(int64_t layer) {
  const size_t index = chunk_of_layer_.at(layer);
  make_resident(index);
  // Recomputation (autograd on) walks backward; forward walks forward.
  const bool backward = torch::autograd::GradMode::is_enabled();
  if (backward) chunks_[index]->in_backward = true;
  const int64_t next = static_cast<int64_t>(index) + (backward ? -1 : 1);
  if (next >= 0 && next < chunk_count() && chunks_[next]->slot < 0) {
    const bool spare = std::any_of(slots_.begin(), slots_.end(), [&](const auto& s) {
      return s->chunk < 0 ||
             (s->chunk != static_cast<int>(index) && !chunks_[s->chunk]->persistent && !chunks_[s->chunk]->in_backward);
    });
    if (spare) make_resident(next);
  }
}

// Backward has left a chunk when it leaves the chunk's first layer.
void ChunkManager::on_left(int64_t layer, bool final) {
  const auto found = chunk_of_layer_.find(layer);
  if (found != chunk_of_layer_.end() && chunks_[found->second]->first_layer == layer) hand_off(found->second, final);
}

// This backward's gradients of the chunk join the host gradients and the
// chunk may leave; when they are `final` (no forward awaits its backward)
// and this is the step's last backward, their reduction starts.
void ChunkManager::hand_off(size_t index, bool final) {
  auto& c = *chunks_[index];
  c.in_backward = false;
  if (c.slot < 0) return;
  auto& slot = *slots_[c.slot];
  at::NoGradGuard no_grad;
  if (state_sharded()) {
    // The host holds no whole gradient: every backward's sum over the
    // replicas goes into the shard (in fp32, as the masters).
    LT_TRACE_SCOPE("chunk_reduce_scatter");
    c.host_grads.add_(replicas_.reduce_scatter(slot.grads.narrow(0, 0, c.flat.padded).to(at::kFloat)).to(at::kCPU));
    slot.grads.narrow(0, 0, c.flat.padded).zero_();
  } else {
    c.grads.add_(slot.grads.narrow(0, 0, c.numel).to(at::kCPU));
    slot.grads.narrow(0, 0, c.numel).zero_();
  }
  if (!armed_ || !final || c.reducing) return;
  start_reduction(index);
  if (on_complete_) on_complete_(index);
}

void ChunkManager::zero_grad() {
  fetches_.clear();  // a step's record, not a run's
  for (auto& c : chunks_) {
    c->host_grads.zero_();
    c->reducing = c->settled = false;
  }
}

at::Tensor ChunkManager::mine(const Chunk& c, const at::Tensor& host) const {
  return !sharded() || state_sharded() ? host : c.flat.mine(host);
}

std::vector<ParamSegment> ChunkManager::chunk_segments(size_t index) const {
  size_t named = 0;
  for (size_t i = 0; i < index; ++i) named += chunks_[i]->params.size();
  const auto& c = *chunks_[index];
  const int64_t lo = sharded() ? c.flat.first : 0, hi = sharded() ? lo + c.flat.shard : c.numel;
  std::vector<ParamSegment> out;
  for (size_t k = 0; k < c.params.size(); ++k) {
    const auto& p = host_params_[named + k];
    auto s = state_sharded() ? shard_segment(p, c.shapes[k], c.offsets[k], lo, hi, c.host_values, c.host_grads)
                             : segment_within(p, c.offsets[k], lo, hi);
    if (s) out.push_back(*s);
  }
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
  if (replicas_.size() == 1 || state_sharded()) return;  // reduced as each backward ended
  c.reduction = FlatShards::reduce_async(replicas_, c.host_grads, sharded() ? &c.reduced : nullptr);
}

void ChunkManager::settle(size_t index) {
  auto& c = *chunks_[index];
  if (c.settled) return;
  if (!c.reducing) start_reduction(index);
  c.reduction.wait();
  if (c.reduced.defined()) {
    mine(c, c.host_grads).copy_(c.reduced);
    c.reduced = at::Tensor();
  }
  c.square_sum = mine(c, c.host_grads).to(at::kDouble).pow(2).sum().item<double>();
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
  for (auto& c : chunks_) mine(*c, c->host_grads).mul_(factor);
}

void ChunkManager::refresh() {
  at::NoGradGuard no_grad;
  if (state_sharded()) {
    // The device copies are stale: the persistent chunks gather anew, the
    // others are fetched when next used.
    for (size_t i = 0; i < chunks_.size(); ++i) evict(i);
    for (size_t i = 0; i < chunks_.size(); ++i)
      if (chunks_[i]->persistent) make_resident(i);
    return;
  }
  if (sharded())
    for (auto& c : chunks_) {
      at::Tensor sent;
      c->flat.share_updates(replicas_, c->host_values, sent).wait();
    }
  for (auto& c : chunks_)
    if (c->slot >= 0) slots_[c->slot]->values.narrow(0, 0, c->numel).copy_(c->values);
}

void ChunkManager::with_masters(const std::function<void()>& fn) {
  for (size_t i = 0; i < chunks_.size(); ++i) evict(i);
  if (!state_sharded()) {
    fn();
  } else {
    // Whole fp32 values for `fn`, gathered from the replicas; what it
    // leaves (a loaded checkpoint) becomes this rank's shard, and the
    // parameters are placeholders again either way.
    std::vector<at::Tensor> shards;
    for (const auto& c : chunks_) shards.push_back(c->host_values);
    with_whole(
        gathers_, shards,
        [this](size_t i, const at::Tensor& whole) { point_parameters(*chunks_[i], whole, at::Tensor()); }, fn);
  }
  for (size_t i = 0; i < chunks_.size(); ++i)
    if (chunks_[i]->persistent) make_resident(i);
}

}  // namespace lt
