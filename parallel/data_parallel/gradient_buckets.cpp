#include "parallel/data_parallel/gradient_buckets.h"

#include <algorithm>
#include <cmath>

#include "core/util/error.h"
#include "core/util/trace.h"

namespace lt {

struct GradientBuckets::Bucket {
  at::Tensor params, grads;     // flat, padded to a multiple of the replica count
  at::Tensor wire;              // the gradients as they travel: `grads` itself or its reduce_dtype copy
  std::vector<size_t> members;  // parameters, in bucket order
  std::vector<int64_t> offsets; // where each starts in the flat buffers
  int64_t shard = 0;            // elements per replica's shard
  size_t pending = 0;           // gradients of the armed backward still to come
  at::Tensor reduced;           // ZeRO-1: this rank's shard of the reduce-scatter (wire dtype)
  Work work;
};

GradientBuckets::GradientBuckets(const std::vector<NamedParameter>& params, Communicator& replicas,
                                 DataParallelOptions options)
    : params_(params), replicas_(replicas), options_(options), bucket_of_(params.size()) {
  check(!params_.empty(), "data parallelism needs parameters");
  const auto dtype = params_.front().tensor.scalar_type();
  // Reverse registration order: the last layers' gradients come first.
  std::vector<std::vector<size_t>> groups(1);
  int64_t bytes = 0;
  for (size_t i = params_.size(); i-- > 0;) {
    const auto& p = params_[i].tensor;
    check(p.scalar_type() == dtype, "data parallelism needs parameters of one dtype ('" + params_[i].name + "' differs)");
    if (!groups.back().empty() && bytes + p.nbytes() > static_cast<size_t>(options_.bucket_bytes))
      groups.emplace_back(), bytes = 0;
    groups.back().push_back(i);
    bytes += p.nbytes();
  }
  at::NoGradGuard no_grad;
  const int64_t replicas_count = replicas_.size();
  for (auto& members : groups) {
    auto b = std::make_unique<Bucket>();
    int64_t total = 0;
    for (size_t i : members) b->offsets.push_back(total), total += params_[i].tensor.numel();
    const int64_t padded = (total + replicas_count - 1) / replicas_count * replicas_count;
    const auto& like = params_[members.front()].tensor;
    b->params = at::zeros({padded}, like.options());
    b->grads = at::zeros({padded}, like.options());
    b->shard = padded / replicas_count;
    const bool converts = options_.reduce_dtype != like.scalar_type() && replicas_count > 1;
    b->wire = converts ? at::empty({padded}, like.options().dtype(options_.reduce_dtype)) : b->grads;
    if (options_.shard_optimizer) b->reduced = at::empty({b->shard}, b->wire.options());
    for (size_t k = 0; k < members.size(); ++k) {
      auto& p = params_[members[k]].tensor;
      auto data = b->params.narrow(0, b->offsets[k], p.numel()).view(p.sizes());
      data.copy_(p);
      p.set_data(data);
      p.mutable_grad() = b->grads.narrow(0, b->offsets[k], p.numel()).view(p.sizes());
      bucket_of_[members[k]] = buckets_.size();
    }
    b->members = std::move(members);
    b->pending = b->members.size();
    buckets_.push_back(std::move(b));
  }
  for (size_t i = 0; i < params_.size(); ++i) hooks_.add(params_[i].tensor, [this, i] { on_gradient(i); });
}

GradientBuckets::~GradientBuckets() = default;

std::vector<ParamSegment> GradientBuckets::segments() const {
  if (!options_.shard_optimizer) return whole(params_);
  std::vector<ParamSegment> out;
  for (const auto& b : buckets_) {
    const int64_t lo = replicas_.rank() * b->shard, hi = lo + b->shard;
    for (size_t k = 0; k < b->members.size(); ++k)
      if (auto s = segment_within(params_[b->members[k]], b->offsets[k], lo, hi)) out.push_back(*s);
  }
  return out;
}

int64_t GradientBuckets::buffer_bytes() const {
  int64_t bytes = 0;
  for (const auto& b : buckets_) {
    bytes += b->params.nbytes() + b->grads.nbytes() + (b->reduced.defined() ? b->reduced.nbytes() : 0);
    if (!b->wire.is_same(b->grads)) bytes += b->wire.nbytes();
  }
  return bytes;
}

void GradientBuckets::zero_grad() {
  for (auto& b : buckets_) b->grads.zero_();
}

void GradientBuckets::arm() {
  for (auto& b : buckets_) b->pending = b->members.size();
  next_launch_ = 0;
  armed_ = options_.overlap;
}

void GradientBuckets::on_gradient(size_t param) {
  if (!armed_) return;
  if (--buckets_[bucket_of_[param]]->pending == 0) launch_ready();
  // Non-blocking collectives progress only inside MPI calls: nudge them.
  for (size_t i = 0; i < next_launch_; ++i) buckets_[i]->work.test();
}

void GradientBuckets::launch_ready() {
  while (next_launch_ < buckets_.size() && buckets_[next_launch_]->pending == 0) launch(*buckets_[next_launch_++]);
}

void GradientBuckets::launch(Bucket& b) {
  if (replicas_.size() == 1) return;
  LT_TRACE_SCOPE("bucket_reduction");
  if (!b.wire.is_same(b.grads)) b.wire.copy_(b.grads);
  b.work = options_.shard_optimizer ? replicas_.reduce_scatter_async(b.wire, b.reduced)
                                    : replicas_.all_reduce_async(b.wire);
}

void GradientBuckets::finish() {
  while (next_launch_ < buckets_.size()) launch(*buckets_[next_launch_++]);
  for (auto& b : buckets_) {
    b->work.wait();
    b->work = Work();
    if (replicas_.size() == 1) continue;
    if (options_.shard_optimizer) b->grads.narrow(0, replicas_.rank() * b->shard, b->shard).copy_(b->reduced);
    else if (!b->wire.is_same(b->grads)) b->grads.copy_(b->wire);
  }
  armed_ = false;
}

double GradientBuckets::grad_square_sum() {
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> squares;
  for (const auto& s : segments()) squares.push_back(s.grad().to(at::kFloat).norm().pow(2));
  auto total = squares.empty() ? at::zeros({1}, at::kDouble) : at::stack(squares).sum().to(at::kDouble).reshape({1});
  total = total.cpu().contiguous();
  if (options_.shard_optimizer && replicas_.size() > 1) replicas_.all_reduce(total);
  return total.item<double>();
}

void GradientBuckets::scale_grads(double factor) {
  at::NoGradGuard no_grad;
  for (const auto& s : segments()) s.grad().mul_(factor);
}

void GradientBuckets::gather_parameters() {
  if (!options_.shard_optimizer || replicas_.size() == 1) return;
  std::vector<Work> works;
  std::vector<at::Tensor> mine;
  for (auto& b : buckets_) {
    mine.push_back(b->params.narrow(0, replicas_.rank() * b->shard, b->shard).clone());
    works.push_back(replicas_.all_gather_async(mine.back(), b->params));
  }
  for (auto& w : works) w.wait();
}

}  // namespace lt
