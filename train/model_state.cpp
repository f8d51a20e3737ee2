#include "train/model_state.h"

#include "core/model/compute_weights.h"
#include "core/util/scope_exit.h"
#include "parallel/data_parallel/replica_sets.h"

namespace lt {
namespace {

StateOptions state_options(const Config& config) {
  const auto& p = config.parallel;
  StateOptions options;
  options.bucket_bytes = static_cast<int64_t>(p.bucket_mb * (1 << 20));
  options.overlap = p.overlap;
  options.zero = static_cast<ZeroLevel>(p.zero);
  options.reduce_dtype = p.reduce_dtype == WireDtype::bf16 ? at::kBFloat16 : at::kFloat;
  options.compute_dtype = compute_dtype(config.train);
  options.read_in_fp32 = read_in_fp32;
  return options;
}

// The layers' replicas are the dp x sp ranks (chunks require tp 1); with
// ZeRO-1 they split every chunk's optimizer state and update.
std::shared_ptr<ChunkManager> chunk_manager(LlamaForCausalLMImpl& model, const Config& config, Mesh& mesh,
                                            at::Device device) {
  // Each layer's parameters under their model names, layers in execution order.
  const auto named = model.named_parameters();
  std::vector<std::pair<int64_t, std::vector<NamedParameter>>> layers;
  for (const auto& [index, layer] : model.model->layers->items()) {
    const std::string prefix = "model.layers." + index + ".";
    std::vector<NamedParameter> params;
    for (const auto& item : named)
      if (item.key().rfind(prefix, 0) == 0) params.push_back({item.key(), item.value()});
    layers.emplace_back(std::stoll(index), std::move(params));
  }
  // memory.plan: auto starts lean (the profile runs so) and lets the planner choose.
  const auto& memory = config.memory;
  const bool manual = memory.plan == PlanMode::manual;
  ChunkOptions options;
  options.chunk_bytes = static_cast<int64_t>(memory.chunk_mb * (1 << 20));
  options.persist = manual ? memory.n_persist : 0;
  options.buffers = manual ? memory.n_buffer : 1;
  options.budget_bytes = static_cast<int64_t>(memory.device_budget_gb * (int64_t{1} << 30));
  // ZeRO-1 shards the chunks' optimizer state; ZeRO-2 and 3 their host
  // values and gradients too.
  options.shard_optimizer = config.parallel.zero >= 1;
  options.shard_state = config.parallel.zero >= 2;
  options.compute = compute_dtype(config.train);
  auto& replicas = mesh.group(Group::dp_sp);
  return std::make_shared<ChunkManager>(layers, device, replicas, options, model.shard().handoff,
                                        options.shard_state ? &mesh.twin(replicas) : nullptr);
}

}  // namespace

ModelState::~ModelState() = default;

LayerFetch ModelState::layer_fetch(const Config& config) {
  if (!config.memory.offload_model && config.parallel.zero != 3) return {};
  return [this](int64_t layer) {
    if (chunks_) chunks_->use(layer);
    for (auto& s : states_) s->use(layer);
  };
}

void ModelState::own(const Config& config, Mesh& mesh, RankModel& rank, at::Device device, bool training) {
  auto& model = *rank.model;
  handoff_ = model.shard().handoff;
  compute_ = model.shard().compute;
  if (config.memory.offload_model) chunks_ = chunk_manager(model, config, mesh, device);
  if (training || config.parallel.zero == 3) {
    // Ranks that run their backwards at different times (a set over
    // pipeline stages) or different numbers of them (adaptive packing)
    // reduce once, at the step's end; those running different numbers of
    // forwards gather the weights once, for the step.
    const bool adaptive = config.data.packing == Packing::adaptive;
    StateOptions options = state_options(config);
    options.gather_each_layer = !adaptive;
    const auto chunked = chunks_ ? chunks_->host_parameters() : std::vector<NamedParameter>{};
    for (auto& set : replica_sets(mesh, model, chunked)) {
      options.reduce_each_backward = !set.spans_stages && !adaptive;
      Communicator* gathers = options.zero == ZeroLevel::weights ? &mesh.twin(*set.group) : nullptr;
      states_.push_back(std::make_unique<ParameterState>(set.params, *set.group, options, handoff_, gathers));
      copies_.push_back(set.copies);
      parts_.push_back(set.parts);
    }
  }
  if (!training) return;
  const auto& t = config.train;
  optimizer_ = std::make_unique<AdamW>(segments(), AdamWOptions{t.beta1, t.beta2, t.eps, t.weight_decay});
  if (chunks_ && config.memory.overlap_update)
    overlap_ = std::make_unique<OverlappedUpdate>(*chunks_, *optimizer_, t.grad_clip > 0);
}

// The chunks' host copies first, as the overlapped update expects.
std::vector<ParamSegment> ModelState::segments() const {
  std::vector<ParamSegment> out = chunks_ ? chunks_->segments() : std::vector<ParamSegment>{};
  for (const auto& state : states_)
    for (auto& s : state->segments()) out.push_back(std::move(s));
  return out;
}

void ModelState::drop_first_bucket() {
  for (auto& s : states_)
    if (s->bucket_count() > 0) return s->drop_bucket(0);
}

void ModelState::zero_grad() {
  for (auto& s : states_) s->zero_grad();
  if (chunks_) chunks_->zero_grad();
  if (handoff_) handoff_->reset();
}

void ModelState::begin_update(double lr) {
  if (overlap_) overlap_->begin(lr);
}

void ModelState::begin_step() {
  zero_grad();
  for (auto& s : states_) s->gather_for_step();
}

// The step's last backward reduces the gradients as they become final
// (with ZeRO-2/3 every backward does).
void ModelState::begin_backward(bool last) {
  for (auto& s : states_) s->begin_backward(last);
  if (chunks_ && last) chunks_->arm();
}

void ModelState::end_backward() {
  for (auto& s : states_) s->end_backward();
}

void ModelState::finish_backward() {
  for (auto& s : states_) s->finish();
  if (overlap_) overlap_->drain();
  if (chunks_) chunks_->reduce();
}

// Each set's squares are complete over its replicas; summing over the tp x
// pp ranks counts a copy held by several of them (norms, shared kv heads,
// tied embeddings) that many times.
double ModelState::clip(Communicator& model, double max_norm) {
  auto squares = at::zeros({1}, at::kDouble);
  for (size_t i = 0; i < states_.size(); ++i) {
    auto part = at::full({1}, states_[i]->grad_square_sum() / static_cast<double>(copies_[i]), at::kDouble);
    if (parts_[i]) parts_[i]->all_reduce(part);  // the other ranks' experts
    squares += part;
  }
  if (chunks_) squares += chunks_->grad_square_sum();
  model.all_reduce(squares);
  const double total = std::sqrt(squares.item<double>());
  if (max_norm > 0 && total > max_norm) {
    const double factor = max_norm / (total + 1e-6);
    for (auto& s : states_) s->scale_grads(factor);
    if (chunks_) chunks_->scale_grads(factor);
  }
  return total;
}

void ModelState::update(double lr, bool clipped) {
  if (overlap_) {
    overlap_->end(clipped);
    optimizer_->update(overlap_->slots(), optimizer_->size(), lr);
  } else {
    optimizer_->step(lr);
  }
  for (auto& s : states_) s->gather_parameters();
  if (chunks_) chunks_->refresh();
  masters_changed();
}

void ModelState::masters_changed() {
  if (compute_) compute_->refresh();
}

void ModelState::on_masters(const std::function<void()>& fn) {
  std::function<void()> run = fn;
  for (auto& s : states_) run = [&s, run] { s->with_masters(run); };
  if (chunks_) chunks_->with_masters(run);
  else run();
}

void ModelState::with_step_weights(const std::function<void()>& fn) {
  for (auto& s : states_) s->gather_for_step();
  ScopeExit release([this] {
    for (auto& s : states_) s->release();
  });
  fn();
}

int64_t ModelState::bucket_count() const {
  int64_t buckets = 0;
  for (const auto& s : states_) buckets += s->bucket_count();
  return buckets;
}

int64_t ModelState::device_segment_elements() const {
  int64_t elements = 0;
  for (const auto& state : states_)
    for (const auto& s : state->segments()) elements += s.size();
  return elements;
}

int64_t ModelState::device_state_bytes() const {
  int64_t bytes = 2 * 4 * device_segment_elements();  // the fp32 moments
  for (const auto& state : states_) bytes += state->buffer_bytes();
  return bytes;
}

int64_t ModelState::host_segment_elements() const {
  int64_t elements = 0;
  if (chunks_)
    for (const auto& s : chunks_->segments()) elements += s.size();
  return elements;
}

}  // namespace lt
