#include "parallel/data_parallel/parameter_state.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <string>
#include <utility>

#include "core/util/error.h"
#include "core/util/trace.h"
#include "parallel/data_parallel/flat_shards.h"

namespace lt {
namespace {

// Waits for `work`, adding the seconds to `total`.
void timed_wait(Work& work, double& total) {
  const auto start = std::chrono::steady_clock::now();
  work.wait();
  total += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  work = Work();
}

// "model.layers.12.mlp.up_proj.weight" -> 12; -1 outside layers.
int64_t layer_of(const std::string& name) {
  const int64_t scope = GradientHandoff::scope_of(name);
  return scope == GradientHandoff::kHead ? -1 : scope;
}

}  // namespace

struct ParameterState::Bucket {
  std::vector<size_t> members;    // parameters, in bucket order
  std::vector<int64_t> offsets;   // where each starts in the flat buffers
  FlatShards flat;                // its elements, cut into the replicas' shards
  int64_t layer = -1;             // ZeRO-3: the layer whose weights these are; -1: gathered for the step
  at::ScalarType gathered_dtype;  // ZeRO-3: of the gathered weights
  at::Tensor placeholder;         // ZeRO-3: what the parameters hold while not gathered
  // The fp32 weights: whole (the parameters view them), or under ZeRO-3
  // this rank's shard. The main gradients: whole (the parameters' .grad
  // view them), or under ZeRO-2/3 this rank's shard.
  at::Tensor params, grads;
  at::Tensor wire;     // the gradients as they travel: `grads` itself, or a copy in reduce_dtype
  at::Tensor reduced;  // this rank's shard of the reduce-scatter (wire dtype)
  // The distinct scopes of its members (GradientHandoff::kUnscoped
  // included: such a bucket waits for backward's end), and how many of them
  // the armed backward has yet to leave for good.
  std::vector<int64_t> scopes;
  size_t pending = 0;
  bool launched = false;
  bool dropped = false;  // fault injection: its next reduction gets zeros from this rank
  Work work;
  // ZeRO-3: the shard in the compute dtype as sent, the gathered weights
  // (in flight while `gathering` is), and how many forwards under autograd
  // still wait for their backward's reduction.
  at::Tensor sent, full;
  Work gathering;
  bool gathered = false;
  int64_t grad_uses = 0;
};

ParameterState::ParameterState(const std::vector<NamedParameter>& params, Communicator& replicas, StateOptions options,
                               std::shared_ptr<GradientHandoff> handoff, Communicator* gathers)
    : params_(params), replicas_(replicas), gathers_(gathers ? *gathers : replicas), options_(options),
      bucket_of_(params.size()) {
  LT_CHECK(!params_.empty(), "data parallelism needs parameters");
  const auto dtype = params_.front().tensor.scalar_type();
  for (const auto& p : params_) shapes_.push_back(p.tensor.sizes().vec());
  // Reverse registration order: the last layers' gradients come first.
  // ZeRO-3 gives each layer buckets of its own (what is gathered together),
  // one for each run of parameters gathered in one dtype.
  std::vector<std::vector<size_t>> groups(1);
  int64_t bytes = 0;
  std::pair<int64_t, at::ScalarType> group_key{-1, at::kFloat};
  for (size_t i = params_.size(); i-- > 0;) {
    const auto& p = params_[i].tensor;
    LT_CHECK(p.scalar_type() == dtype,
             "data parallelism needs parameters of one dtype ('" + params_[i].name + "' differs)");
    const std::pair<int64_t, at::ScalarType> key{gathers_layers() ? layer_of(params_[i].name) : -1,
                                                 gathered_dtype(params_[i].name)};
    const bool full = key.first < 0 && bytes + p.nbytes() > static_cast<size_t>(options_.bucket_bytes);
    if (!groups.back().empty() && (full || key != group_key)) groups.emplace_back(), bytes = 0;
    groups.back().push_back(i);
    bytes += p.nbytes();
    group_key = key;
  }
  at::NoGradGuard no_grad;
  const int64_t replica_count = replicas_.size();
  for (auto& members : groups) {
    auto b = std::make_unique<Bucket>();
    int64_t total = 0;
    for (size_t i : members) b->offsets.push_back(total), total += params_[i].tensor.numel();
    b->flat = FlatShards(total, replicas_);
    b->layer = gathers_layers() ? layer_of(params_[members.front()].name) : -1;
    b->gathered_dtype = gathered_dtype(params_[members.front()].name);
    const auto& like = params_[members.front()].tensor;
    auto values = at::zeros({b->flat.padded}, like.options());
    b->grads = at::zeros({grads_sharded() ? b->flat.shard : b->flat.padded}, like.options());
    if (!grads_sharded()) {
      const bool converts = options_.reduce_dtype != like.scalar_type() && replica_count > 1;
      b->wire = converts ? at::empty({b->flat.padded}, like.options().dtype(options_.reduce_dtype)) : b->grads;
      if (options_.zero == ZeroLevel::optimizer && replica_count > 1)
        b->reduced = at::empty({b->flat.shard}, b->wire.options());
    }
    for (size_t k = 0; k < members.size(); ++k) {
      auto& p = params_[members[k]].tensor;
      auto data = values.narrow(0, b->offsets[k], p.numel()).view(p.sizes());
      data.copy_(p);
      if (!weights_sharded()) p.set_data(data);
      if (!grads_sharded()) p.mutable_grad() = b->grads.narrow(0, b->offsets[k], p.numel()).view(p.sizes());
      bucket_of_[members[k]] = buckets_.size();
      const int64_t scope = handoff ? GradientHandoff::scope_of(params_[members[k]].name) : GradientHandoff::kUnscoped;
      if (std::find(b->scopes.begin(), b->scopes.end(), scope) == b->scopes.end()) b->scopes.push_back(scope);
    }
    for (int64_t scope : b->scopes) buckets_of_scope_[scope].push_back(buckets_.size());
    b->params = weights_sharded() ? b->flat.mine(values).clone() : values;
    if (b->layer >= 0) buckets_of_layer_[b->layer].push_back(buckets_.size());
    b->members = std::move(members);
    buckets_.push_back(std::move(b));
  }
  if (weights_sharded())
    for (auto& b : buckets_) {
      b->placeholder = at::empty({0}, b->params.options().dtype(b->gathered_dtype));
      point_parameters(*b, at::Tensor());
    }
  if (handoff)
    listening_ = GradientHandoff::listen(handoff, [this](int64_t scope, bool final) { on_left(scope, final); });
}

ParameterState::~ParameterState() = default;

void ParameterState::drop_bucket(size_t index) { buckets_.at(index)->dropped = true; }

at::ScalarType ParameterState::gathered_dtype(const std::string& name) const {
  if (!weights_sharded()) return at::kFloat;
  return options_.read_in_fp32 && options_.read_in_fp32(name) ? at::kFloat : options_.compute_dtype;
}

at::Tensor ParameterState::owned_params(const Bucket& b) const {
  return weights_sharded() ? b.params : b.flat.mine(b.params);
}

at::Tensor ParameterState::owned_grads(const Bucket& b) const {
  return grads_sharded() ? b.grads : b.flat.mine(b.grads);
}

std::vector<ParamSegment> ParameterState::segments() const {
  if (options_.zero == ZeroLevel::none) return whole(params_);
  std::vector<ParamSegment> out;
  for (const auto& b : buckets_) {
    const int64_t lo = b->flat.first, hi = lo + b->flat.shard;
    const auto values = owned_params(*b), grads = owned_grads(*b);
    for (size_t k = 0; k < b->members.size(); ++k) {
      const size_t m = b->members[k];
      if (auto s = shard_segment(params_[m], shapes_[m], b->offsets[k], lo, hi, values, grads)) out.push_back(*s);
    }
  }
  return out;
}

int64_t ParameterState::buffer_bytes() const {
  int64_t bytes = 0;
  for (const auto& b : buckets_) {
    bytes += b->params.nbytes() + b->grads.nbytes() + (b->reduced.defined() ? b->reduced.nbytes() : 0);
    if (b->wire.defined() && !b->wire.is_same(b->grads)) bytes += b->wire.nbytes();
  }
  return bytes;
}

void ParameterState::zero_grad() {
  for (auto& b : buckets_) b->grads.zero_();
  if (grads_sharded())
    for (auto& p : params_) p.tensor.mutable_grad() = at::Tensor();
  peak_gathered_ = gathered_;
}

void ParameterState::begin_backward(bool last) {
  due_ = last || (grads_sharded() && options_.reduce_each_backward);
  if (!due_) return;
  for (auto& b : buckets_) b->pending = b->scopes.size();
  done_scopes_.clear();
  next_launch_ = 0;
  armed_ = options_.overlap;
}

void ParameterState::end_backward() {
  if (!due_ || !grads_sharded() || !options_.reduce_each_backward) return;
  launch_all_and_settle();
}

void ParameterState::finish() {
  if (due_) launch_all_and_settle();
  if (weights_sharded()) release();
}

// A round that reduces each backward's gradients apart (ZeRO-2/3) needs
// only this backward to have left the scope (one backward per forward, as
// the pipeline runs them); the step's one round needs the scope left for
// good, no other forward of it awaiting its backward (else the bucket waits
// for end_backward() or finish()).
void ParameterState::on_left(int64_t scope, bool final) {
  const bool each_backward = grads_sharded() && options_.reduce_each_backward;
  if (!armed_ || !(final || each_backward) || !done_scopes_.insert(scope).second) return;
  const auto found = buckets_of_scope_.find(scope);
  if (found == buckets_of_scope_.end()) return;
  for (size_t i : found->second) --buckets_[i]->pending;
  launch_ready();
  // Non-blocking collectives progress only inside MPI calls: nudge them.
  for (size_t i = 0; i < next_launch_; ++i) buckets_[i]->work.test();
}

void ParameterState::launch_ready() {
  while (next_launch_ < buckets_.size() && buckets_[next_launch_]->pending == 0) launch(*buckets_[next_launch_++]);
}

void ParameterState::launch_all_and_settle() {
  while (next_launch_ < buckets_.size()) launch(*buckets_[next_launch_++]);
  for (auto& b : buckets_) settle(*b);
  armed_ = due_ = false;
}

// ZeRO-2/3: the bucket's gradients move into a flat buffer of their own and
// leave the parameters; under ZeRO-3 a layer whose last backward this was
// frees its weights.
void ParameterState::pack_gradients(Bucket& b) {
  at::NoGradGuard no_grad;
  const auto dtype = replicas_.size() > 1 ? options_.reduce_dtype : at::kFloat;
  b.wire = at::zeros({b.flat.padded}, b.grads.options().dtype(dtype));
  for (size_t k = 0; k < b.members.size(); ++k) {
    auto& p = params_[b.members[k]].tensor;
    if (p.grad().defined()) b.wire.narrow(0, b.offsets[k], p.grad().numel()).copy_(p.grad().reshape(-1));
    p.mutable_grad() = at::Tensor();
  }
  if (weights_sharded() && b.layer >= 0 && b.grad_uses > 0 && --b.grad_uses == 0) free_weights(b);
}

void ParameterState::launch(Bucket& b) {
  if (b.launched) return;
  // ZeRO-2/3 hold a bucket's gradients twice while it is reduced: at most
  // two buckets in flight bound that to two buckets' worth.
  if (grads_sharded())
    while (in_flight_.size() >= 2) settle(*in_flight_.front());
  b.launched = true;
  if (grads_sharded()) pack_gradients(b), in_flight_.push_back(&b);
  if (replicas_.size() == 1) return;
  LT_TRACE_SCOPE("bucket_reduction");
  if (!grads_sharded() && !b.wire.is_same(b.grads)) b.wire.copy_(b.grads);
  if (std::exchange(b.dropped, false)) b.wire.zero_();
  b.work = FlatShards::reduce_async(replicas_, b.wire, options_.zero == ZeroLevel::none ? nullptr : &b.reduced);
}

void ParameterState::settle(Bucket& b) {
  if (!b.launched) return;
  b.launched = false;
  in_flight_.erase(std::remove(in_flight_.begin(), in_flight_.end(), &b), in_flight_.end());
  timed_wait(b.work, waits_.reduce_s);
  at::NoGradGuard no_grad;
  if (grads_sharded()) {
    b.grads.add_(replicas_.size() > 1 ? b.reduced : b.wire);
    b.wire = b.reduced = at::Tensor();
  } else if (replicas_.size() > 1) {
    if (options_.zero == ZeroLevel::optimizer) owned_grads(b).copy_(b.reduced);
    else if (!b.wire.is_same(b.grads)) b.grads.copy_(b.wire);
  }
}

double ParameterState::grad_square_sum() {
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> squares;
  for (const auto& s : segments()) squares.push_back(s.grad().to(at::kFloat).norm().pow(2));
  auto total = squares.empty() ? at::zeros({1}, at::kDouble) : at::stack(squares).sum().to(at::kDouble).reshape({1});
  total = total.cpu().contiguous();
  if (sharded()) replicas_.all_reduce(total);
  return total.item<double>();
}

void ParameterState::scale_grads(double factor) {
  at::NoGradGuard no_grad;
  for (const auto& s : segments()) s.grad().mul_(factor);
}

void ParameterState::gather_parameters() {
  if (!sharded() || weights_sharded()) return;
  std::vector<Work> works;
  std::vector<at::Tensor> sent(buckets_.size());
  for (size_t i = 0; i < buckets_.size(); ++i)
    works.push_back(buckets_[i]->flat.share_updates(replicas_, buckets_[i]->params, sent[i]));
  for (auto& w : works) w.wait();
}

// --- ZeRO-3: weights gathered where they are used ---

void ParameterState::point_parameters(Bucket& b, const at::Tensor& flat) {
  for (size_t k = 0; k < b.members.size(); ++k) {
    const size_t m = b.members[k];
    auto& p = params_[m].tensor;
    p.set_data(flat.defined() ? flat.narrow(0, b.offsets[k], c10::multiply_integers(shapes_[m])).view(shapes_[m])
                              : b.placeholder);
    if (!flat.defined()) p.mutable_grad() = at::Tensor();
    renew_grad_accumulator(p);
  }
}

void ParameterState::gather(Bucket& b) {
  if (b.full.defined()) return;
  LT_TRACE_SCOPE("parameter_gather");
  at::NoGradGuard no_grad;
  b.sent = b.params.to(b.gathered_dtype);
  b.full = gathers_.size() == 1 ? b.sent : at::empty({b.flat.padded}, b.sent.options());
  if (gathers_.size() > 1) b.gathering = gathers_.all_gather_async(b.sent, b.full);
  if (!b.full.is_same(b.params)) gathered_ += static_cast<int64_t>(b.full.nbytes());
  peak_gathered_ = std::max(peak_gathered_, gathered_);
}

void ParameterState::ensure(Bucket& b) {
  if (b.gathered) return;
  gather(b);
  timed_wait(b.gathering, waits_.gather_s);
  point_parameters(b, b.full);
  b.gathered = true;
}

void ParameterState::free_weights(Bucket& b) {
  if (!b.full.defined()) return;
  timed_wait(b.gathering, waits_.gather_s);  // a prefetch in flight completes on every rank alike
  if (b.gathered) point_parameters(b, at::Tensor());
  if (!b.full.is_same(b.params)) gathered_ -= static_cast<int64_t>(b.full.nbytes());
  b.full = b.sent = at::Tensor();
  b.gathered = false;
  b.grad_uses = 0;
}

void ParameterState::use(int64_t layer) {
  if (!gathers_layers()) return;
  const auto found = buckets_of_layer_.find(layer);
  if (found == buckets_of_layer_.end()) return;
  // Forward walks up the layers; backward's recomputation walks down.
  const bool down = layer < last_layer_ || (layer == last_layer_ && at::GradMode::is_enabled());
  last_layer_ = layer;
  for (size_t i : found->second) gather(*buckets_[i]);
  for (size_t i : found->second) {
    ensure(*buckets_[i]);
    // Autograd keeps the weights for this forward's backward.
    if (at::GradMode::is_enabled()) ++buckets_[i]->grad_uses;
  }
  const auto next = buckets_of_layer_.find(layer + (down ? -1 : 1));
  const int64_t prefetch = next == buckets_of_layer_.end() ? -1 : next->first;
  for (auto& other : buckets_)
    if (other->layer >= 0 && other->layer != layer && other->layer != prefetch && other->grad_uses == 0)
      free_weights(*other);
  if (prefetch >= 0)
    for (size_t i : next->second) gather(*buckets_[i]);
}

void ParameterState::gather_for_step() {
  if (!weights_sharded()) return;
  for (auto& b : buckets_)
    if (b->layer < 0) gather(*b);
  for (auto& b : buckets_)
    if (b->layer < 0) ensure(*b);
}

void ParameterState::release() {
  for (auto& b : buckets_) free_weights(*b);
}

void ParameterState::with_masters(const std::function<void()>& fn) {
  if (!weights_sharded()) return fn();
  release();
  std::vector<at::Tensor> shards;
  for (const auto& b : buckets_) shards.push_back(b->params);
  // What `fn` leaves (a loaded checkpoint) becomes this rank's shard; the
  // parameters are placeholders again either way.
  with_whole(
      gathers_, shards, [this](size_t i, const at::Tensor& whole) { point_parameters(*buckets_[i], whole); }, fn);
}

}  // namespace lt
