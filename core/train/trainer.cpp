#include "core/train/trainer.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "core/data/packer.h"
#include "core/hf/hf_weights.h"
#include "core/train/loss.h"
#include "core/train/lr_schedule.h"
#include "core/util/bf16_support.h"
#include "core/util/error.h"
#include "core/train/loss_watch.h"
#include "core/util/fault_injection.h"
#include "core/util/resources.h"
#include "core/util/stop_signal.h"
#include "core/util/trace.h"
#include "offload/activations/memory_policy.h"
#include "offload/profiler/memory_tracker.h"
#include "parallel/data_parallel/replica_sets.h"
#include "parallel/layout_scorer.h"
#include "parallel/sequence/sequence_parallel.h"

namespace lt {
namespace {

std::string format(const char* pattern, double value) {
  char buffer[64];
  std::snprintf(buffer, sizeof(buffer), pattern, value);
  return buffer;
}

std::unique_ptr<Mesh> solo_mesh(const Config& config) {
  int initialized = 0;
  MPI_Initialized(&initialized);
  LT_CHECK(initialized, "the trainer needs MPI: create an lt::MpiSession first");
  return std::make_unique<Mesh>(Layout(resolve_degrees(config, 1)), MPI_COMM_SELF, config.parallel.timeout_s);
}

}  // namespace

void check_trainable(const Config& c) {
  if (c.parallel.ep > 1 && !c.model.moe.enabled())
    fail("parallel.ep=" + std::to_string(c.parallel.ep) +
         " splits the experts of a mixture-of-experts model, and this model has none (model.moe.experts: 0): "
         "set parallel.ep to 1");
}

double flops_per_token(const ModelConfig& model, int64_t seq_len) {
  return 6.0 * flop_parameters(model) + 6.0 * model.num_layers * model.hidden_size * seq_len;
}

Trainer::Trainer(Config config, Mesh* mesh)
    : config_(std::move(config)), own_mesh_(mesh ? nullptr : solo_mesh(config_)), mesh_(mesh ? *mesh : *own_mesh_),
      replicas_(mesh_.group(Group::dp_sp)), device_(device_for(config_.train.device, mesh_.local_rank())),
      checkpoints_(config_.checkpoint_dir(), config_.checkpoint.keep) {
  check_trainable(config_);
  config_.train.precision = resolve_precision(config_.train.precision, config_.train.device);
  if (config_.train.bf16()) check_bf16_device(device_);
  track_device_memory();
  at::set_num_threads(static_cast<int>(default_threads(config_.train.threads, mesh_.local_size())));
  at::manual_seed(config_.train.seed);
  // Every rank initialises from the same seed: each holds its part of the
  // same weights, and replicas start equal.
  auto built = build_rank_model(config_, mesh_, device_);
  model_ = built.model;
  loss_sum_ = built.loss_sum;
  chunks_ = built.chunks;
  const auto& p = config_.parallel;
  StateOptions options;
  options.bucket_bytes = static_cast<int64_t>(p.bucket_mb * (1 << 20));
  options.overlap = p.overlap;
  options.zero = static_cast<ZeroLevel>(p.zero);
  options.reduce_dtype = p.reduce_dtype == "bf16" ? at::kBFloat16 : at::kFloat;
  options.compute_dtype = compute_dtype(config_.train);
  options.read_in_fp32 = read_in_fp32;
  // The optimizer updates the replica sets' segments and the chunked
  // layers' host copies.
  std::vector<ParamSegment> segments = chunks_ ? chunks_->segments() : std::vector<ParamSegment>{};
  for (auto& set : replica_sets(mesh_, *model_, chunks_ ? chunks_->host_parameters() : std::vector<NamedParameter>{})) {
    // Ranks that run their backwards at different times (a set over
    // pipeline stages) or different numbers of them (adaptive packing)
    // reduce once, at the step's end.
    options.reduce_each_backward = !set.spans_stages && config_.data.packing != "adaptive";
    Communicator* gathers = options.zero == ZeroLevel::weights ? &mesh_.twin(*set.group) : nullptr;
    states_.push_back(std::make_unique<ParameterState>(set.params, *set.group, options, gathers));
    copies_.push_back(set.copies);
    parts_.push_back(set.parts);
    for (auto& s : states_.back()->segments()) segments.push_back(s);
  }
  if (chunks_ || options.zero == ZeroLevel::weights) {
    fetch_ = [this](int64_t layer) {
      if (chunks_) chunks_->use(layer);
      for (auto& s : states_) s->use(layer);
    };
    // The rank model's layers already fetch their chunks; ZeRO-3's gathers join them.
    if (options.zero == ZeroLevel::weights) apply_memory_policy(*model_, config_.memory, fetch_);
  }
  if (config_.data.packing == "adaptive") {
    const auto& a = config_.parallel.adaptive;
    adaptive_ = std::make_unique<AdaptiveSequenceParallel>(
        mesh_, a, adaptive_max_group(a, mesh_.layout().world(), config_.model.num_heads));
  }
#ifdef LT_WITH_CUDA
  if (device_.is_cuda()) mesh_.enable_nccl(device_.index());
#endif
  // Stages pass activations in the compute dtype.
  pipeline_ = std::make_unique<Pipeline>(mesh_.group(Group::pp),
                                         at::TensorOptions().device(device_).dtype(compute_dtype(config_.train)));
  const auto& t = config_.train;
  optimizer_ = std::make_unique<AdamW>(segments, AdamWOptions{t.beta1, t.beta2, t.eps, t.weight_decay});
  if (chunks_ && config_.memory.overlap_update)
    overlap_ = std::make_unique<OverlappedUpdate>(*chunks_, *optimizer_, t.grad_clip > 0);
}

TrainState Trainer::restore(const std::string& path, const nlohmann::json& data_fingerprint) {
  TrainState state;
  on_masters([&] { load_checkpoint(path, *model_, optimizer_.get(), &state); });
  check_data_fingerprint(path, state.data_fingerprint, data_fingerprint);
  masters_changed();
  at::Generator generator = at::detail::getDefaultCPUGenerator();
  generator.set_state(state.rng);
  logger_->line("resumed from " + path + " at step " + std::to_string(state.step));
  return state;
}

// The run starts from a Hugging Face model's weights, with a fresh optimizer.
void Trainer::initialize_from_hf() {
  on_masters([&] { load_hf_weights(config_.init.from_hf, *model_); });
  masters_changed();
  logger_->line("initialized from " + config_.init.from_hf);
}

// The final checkpoint, whatever the layout that wrote it, as an HF model
// in run_dir/hf (replacing this run's export of an earlier end).
void Trainer::export_final() {
  const std::string out = config_.run_dir + "/hf";
  LlamaForCausalLM whole(config_.model);
  load_checkpoint(*checkpoints_.newest(), *whole, nullptr, nullptr);
  std::filesystem::remove_all(out);
  export_hf(config_.model, *whole, out, {config_.checkpoint.export_hf});
  logger_->line("exported to " + out + " (" + config_.checkpoint.export_hf + ")");
}

bool Trainer::traces() const {
  const auto& p = config_.profile;
  return p.enabled() && (p.ranks.empty() || std::find(p.ranks.begin(), p.ranks.end(), mesh_.rank()) != p.ranks.end());
}

void Trainer::write_trace() {
  const auto& p = config_.profile;
  const std::string path = config_.run_dir + "/trace/rank" + std::to_string(mesh_.rank()) + "_steps" +
                           std::to_string(p.start_step) + "-" + std::to_string(p.last_step()) + ".json";
  stop_trace(path);
  tracing_ = false;
  logger_->line("profile: steps " + std::to_string(p.start_step) + "-" + std::to_string(p.last_step()) + " traced to " +
                config_.run_dir + "/trace/ (a file per traced rank; open one in ui.perfetto.dev)");
}

void Trainer::masters_changed() {
  if (const auto& compute = model_->shard().compute) compute->refresh();
}

void Trainer::on_masters(const std::function<void()>& fn) {
  std::function<void()> run = fn;
  for (auto& s : states_) run = [&s, run] { s->with_masters(run); };
  lt::on_masters(chunks_.get(), run);
}

bool Trainer::holds_whole_model() {
  return mesh_.group(Group::model).size() == 1 && mesh_.group(Group::ep).size() == 1;
}

// The first replica of every (tp, pp) position writes its weights; the
// optimizer state is written by those too, or with ZeRO-1 by every rank,
// each its own shard. One process writes plain model.safetensors and
// optimizer.safetensors.
CheckpointStore::Part Trainer::checkpoint_part() {
  const bool one_copy = holds_whole_model();
  auto numbered = [&](const char* stem) {
    char name[64];
    std::snprintf(name, sizeof(name), "%s.%05d.safetensors", stem, mesh_.rank());
    return std::string(name);
  };
  CheckpointStore::Part part;
  // Under expert parallelism, the first replica of each set of experts
  // writes; the weights outside experts are then written by several ranks,
  // copies the reader tolerates.
  const bool writer = mesh_.group(Group::ep_dp).rank() == 0;
  if (writer) part.model_file = one_copy ? "model.safetensors" : numbered("model");
  if (config_.parallel.zero >= 1) part.optimizer_file = numbered("optimizer");
  else if (writer) part.optimizer_file = one_copy ? "optimizer.safetensors" : numbered("optimizer");
  return part;
}

// The norm over the whole model: each set's squares are complete over its
// replicas; summing over the tp x pp ranks counts a copy held by several of
// them (norms, shared kv heads, tied embeddings) that many times.
double Trainer::clip_gradients() {
  auto squares = at::zeros({1}, at::kDouble);
  for (size_t i = 0; i < states_.size(); ++i) {
    auto part = at::full({1}, states_[i]->grad_square_sum() / copies_[i], at::kDouble);
    if (parts_[i]) parts_[i]->all_reduce(part);  // the other ranks' experts
    squares += part;
  }
  if (chunks_) squares += chunks_->grad_square_sum();
  mesh_.group(Group::model).all_reduce(squares);
  const double total = std::sqrt(squares.item<double>());
  const double max_norm = config_.train.grad_clip;
  if (clips(total)) {
    const double factor = max_norm / (total + 1e-6);
    for (auto& s : states_) s->scale_grads(factor);
    if (chunks_) chunks_->scale_grads(factor);
  }
  return total;
}

// This dp rank's rows; of each, this sequence-parallel rank's columns,
// padded so that sp (and tp's sequence split) divide them.
Batch Trainer::local_batch(const Batch& batch) {
  auto& dp = mesh_.group(Group::dp);
  const int64_t rows = batch.size() / dp.size();
  return sequence_part(batch.rows(dp.rank() * rows, rows), config_.parallel, mesh_).batch;
}

at::Tensor Trainer::stage_forward(const Batch& micro, const at::Tensor& input) {
  if (!model_->shard().last_stage) return model_->forward(model_input(micro), input);
  return head_loss(*model_, model_->head_input(model_input(micro), input), micro.labels, loss_sum_, config_.memory);
}

double Trainer::compute_gradients(const Batch& batch, int64_t step) {
  // Every micro-batch's summed loss is divided by the valid tokens of the
  // whole global batch, so accumulation and the sum over replicas give
  // exactly the full-batch mean, for any dp degree.
  const double valid = static_cast<double>(std::max<int64_t>(1, batch.valid_tokens()));
  const Batch mine = local_batch(batch);
  const int64_t micro = std::min(config_.train.micro_batch_size, mine.size());
  std::vector<Batch> micros;
  for (int64_t first = 0; first < mine.size(); first += micro)
    micros.push_back(mine.rows(first, std::min(micro, mine.size() - first)).to(device_));
  MoeBalance* moe = model_->shard().moe.get();
  const int64_t global_micro_batches = mesh_.group(Group::dp).size() * static_cast<int64_t>(micros.size());
  if (moe) moe->begin_step(mine.tokens.numel() * replicas_.size(), batch.size(), global_micro_batches);
  const double loss = run_micro_batches(micros, valid, step);
  if (moe) moe_stats_ = moe->end_step([this](at::Tensor& t) { mesh_.group(Group::world).all_reduce(t); });
  return loss;
}

double Trainer::run_micro_batches(const std::vector<Batch>& micros, double valid, int64_t step) {
  const auto& shard = model_->shard();
  auto total = at::zeros({1}, at::kDouble);
  MoeBalance* moe = shard.moe.get();
  StageWork work;
  work.all_forward_first = config_.all_forward_first();
  // What passes between stages: hidden states of this rank's tokens (1/tp
  // of them under tp's sequence parallelism).
  work.shape = [&](int m) {
    const int64_t tokens = micros[m].tokens.size(1) / (shard.tp_sequence ? shard.tp_size : 1);
    return std::vector<int64_t>{micros[m].size(), tokens, config_.model.hidden_size};
  };
  const bool poisoned = inject_fault(mesh_.rank(), step);
  work.forward = [&](int m, const at::Tensor& input) {
    if (moe) moe->set_micro_batch(m);
    auto out = stage_forward(micros[m], input);
    if (poisoned) out = out * std::nan("");
    if (!shard.last_stage) return out;
    total += out.detach().to(at::kCPU, at::kDouble);
    return out / valid;
  };
  // The step's last backward reduces the gradients as they complete (with
  // ZeRO-2/3 every backward does).
  auto begin_backward = [&](bool last) {
    for (auto& s : states_) s->begin_backward(last);
    if (chunks_ && last) chunks_->arm();
  };
  work.before_backward = [&](int m) {
    if (moe) moe->set_micro_batch(m);  // its recomputation finds the forward's routing
    begin_backward(m + 1 == static_cast<int>(micros.size()));
  };
  work.after_backward = [&](int) {
    for (auto& s : states_) s->end_backward();
  };
  for (auto& s : states_) s->zero_grad(), s->gather_unlayered();
  if (chunks_) chunks_->zero_grad();
  pipeline_->run(static_cast<int>(micros.size()), work);
  if (micros.empty()) begin_backward(true);  // a rank with nothing to run still joins the reductions
  for (auto& s : states_) s->finish();
  if (overlap_) overlap_->drain();
  if (chunks_) chunks_->reduce();
  // The last stage has the loss; every tp rank of it the same one.
  mesh_.group(Group::pp).all_reduce(total);
  replicas_.all_reduce(total);
  return total.item<double>() / valid;
}

// `labelled`: some token of the step's global batch has a label. One with
// none (documents of a single token) is skipped whole, not run as an update
// of zero gradients that would still move AdamW's moments and decay.
double Trainer::update(bool labelled, const std::function<double()>& gradients, double lr, double& grad_norm) {
  unlabelled_ = !labelled;
  if (unlabelled_) {
    last_skipped_ = true, grad_norm = 0;
    return std::nan("");
  }
  reset_device_peak(device_);
  const int64_t before = device_bytes(device_);
  if (overlap_) overlap_->begin(lr);
  const double loss = gradients();
  last_activation_bytes_ = device_peak_bytes(device_) - before;
  grad_norm = clip_gradients();
  // Every rank has the same loss and norm: all skip, or none.
  last_skipped_ = !std::isfinite(loss) || !std::isfinite(grad_norm);
  if (last_skipped_) {
    LT_CHECK(!overlap_,
             "loss " + std::to_string(loss) +
                 ": memory.overlap_update already updated the chunks during "
                 "backward, so this step cannot be skipped: set memory.overlap_update: false to skip such steps");
    return loss;
  }
  if (overlap_) {
    overlap_->end(clips(grad_norm));
    optimizer_->update(overlap_->slots(), optimizer_->size(), lr);
  } else {
    optimizer_->step(lr);
  }
  for (auto& s : states_) s->gather_parameters();
  if (chunks_) chunks_->refresh();
  masters_changed();
  return loss;
}

double Trainer::step(const Batch& batch, int64_t step, double lr, double& grad_norm) {
  return update(
      batch.valid_tokens() > 0, [&] { return compute_gradients(batch, step); }, lr, grad_norm);
}

double Trainer::step(const std::vector<Batch>& documents, const SpPlan& plan, int64_t step, double lr,
                     double& grad_norm) {
  const bool labelled =
      std::any_of(documents.begin(), documents.end(), [](const Batch& d) { return d.valid_tokens() > 0; });
  return update(
      labelled, [&] { return compute_gradients(documents, plan, step); }, lr, grad_norm);
}

void Trainer::log_step(int64_t step, int64_t length, double loss, double lr, double grad_norm, double seconds,
                       int64_t tokens) {
  const double tokens_per_s = tokens / seconds;
  const double mfu = tokens_per_s * flops_per_token(config_.model, length) / peak_flops_;
  const int64_t peak = peak_memory_bytes(device_);
  const double eta = elapsed_ / (step - first_step_) * (config_.train.steps - step);
  std::string moe;
  nlohmann::ordered_json metrics = {{"step", step}, {"seq_len", length},         {"loss", loss},
                                    {"lr", lr},     {"grad_norm", grad_norm},    {"tokens_per_s", tokens_per_s},
                                    {"mfu", mfu},   {"peak_memory_bytes", peak}, {"elapsed_s", elapsed_}};
  if (config_.model.moe.enabled()) {
    // The last step's routing: the losses it added and each expert's load
    // against the mean (min, max, coefficient of variation over experts).
    const auto& m = moe_stats_;
    moe = " | aux " + format("%.4f", m.balance_loss + m.z_loss) + " | load " + format("%.2f", m.load_min) + "-" +
          format("%.2f", m.load_max) + " cv " + format("%.3f", m.load_cv) + " | dropped " +
          format("%.1f%%", 100 * m.dropped);
    metrics.update({{"moe_balance_loss", m.balance_loss},
                    {"moe_z_loss", m.z_loss},
                    {"moe_load_min", m.load_min},
                    {"moe_load_max", m.load_max},
                    {"moe_load_cv", m.load_cv},
                    {"moe_dropped", m.dropped}});
  }
  logger_->line("step " + std::to_string(step) + "/" + std::to_string(config_.train.steps) + " | seq " +
                std::to_string(length) + " | loss " + format("%.4f", loss) + moe +
                (adaptive_ ? describe_adaptive_step() : "") + " | lr " + format("%.2e", lr) + " | grad " +
                format("%.3f", grad_norm) + " | " + human_count(tokens_per_s) + " tok/s | MFU " +
                format("%.1f%%", 100 * mfu) + " | mem " + human_bytes(peak) + " | ETA " + human_duration(eta));
  logger_->metrics(metrics);
}

// On the training layout, every rank its part and the dp replicas a share
// of the batches: the table goes to rank 0's log, the figures to
// metrics.jsonl and, with the step, to eval.jsonl.
void Trainer::evaluate(TrainResult& result, int64_t step) {
  if (adaptive_) model_->set_attention(attention);  // adaptive steps leave a group's attention behind
  const auto score = layout_scorer(*model_, mesh_, config_.parallel, device_, compute_dtype(config_.train));
  for (auto& s : states_) s->gather_unlayered();
  // ZeRO-3's gathers are collectives of the replicas: they evaluate in lockstep.
  const EvalReport report = lt::evaluate(score, config_, replica_share(mesh_, config_.parallel.zero == 3));
  for (auto& s : states_) s->release();
  std::string text = describe(report, config_);
  text.pop_back();  // the last newline: the logger adds its own
  logger_->line(text);
  if (report.loss) {
    result.eval = report.loss;
    logger_->metrics({{"step", step}, {"eval_loss", report.loss->loss}, {"eval_perplexity", report.loss->perplexity}});
  }
  if (!report.passkey.empty()) {
    result.passkey = report.passkey.back();
    logger_->metrics({{"step", step},
                      {"passkey_length", result.passkey->length},
                      {"passkey_exact", result.passkey->exact_match},
                      {"passkey_digit_accuracy", result.passkey->digit_accuracy}});
  }
  auto record = to_json(report);
  record["step"] = step;
  if (mesh_.rank() == 0) std::ofstream(config_.run_dir + "/eval.jsonl", std::ios::app) << record.dump() << "\n";
}

TrainResult Trainer::run() {
  const auto resume_from =
      checkpoints_.open(config_.checkpoint.resume, config_.checkpoint.move_aside, mesh_.group(Group::world));
  // Rank 0 speaks for the job; a resumed run appends to its files.
  logger_ = mesh_.rank() == 0 ? std::make_unique<Logger>(config_.run_dir, resume_from.has_value())
                              : std::make_unique<Logger>();
  if (!checkpoints_.moved_aside().empty()) logger_->line(checkpoints_.moved_aside());
  if (!resume_from && config_.checkpoint.resume == "auto")
    logger_->line("no checkpoint in " + config_.checkpoint_dir() + ", starting fresh");
  std::unique_ptr<DocumentSource> source;
  TrainState state;
  agree_on(mesh_.group(Group::world), [&] {
    source = make_document_source(config_.data, config_.model.vocab_size, config_.train.seed, Split::Train);
    if (resume_from) state = restore(*resume_from, source->fingerprint());
    else if (!config_.init.from_hf.empty()) initialize_from_hf();
  });
  const std::string resolved = to_yaml(config_);
  if (mesh_.rank() == 0) std::ofstream(config_.run_dir + "/config.yaml") << resolved << "\n";
  logger_->line("# resolved config (" + config_.source_file + ")\n" + resolved);
  const auto& d = mesh_.layout().degrees();
  int64_t buckets = 0;
  for (const auto& s : states_) buckets += s->bucket_count();
  logger_->line("model: " + human_count(static_cast<double>(flop_parameters(config_.model))) +
                " parameters (non-embedding + head), device " + device_.str() + ", " +
                std::to_string(at::get_num_threads()) + " threads per rank; " + std::to_string(d.world()) +
                " ranks (dp " + std::to_string(d.dp) + ", tp " + std::to_string(d.tp) + ", pp " + std::to_string(d.pp) +
                ", ulysses " + std::to_string(d.ulysses) + ", ring " + std::to_string(d.ring) + ", ep " +
                std::to_string(d.ep) + ", zero " + std::to_string(config_.parallel.zero) + ", " +
                std::to_string(buckets) + " gradient buckets)");

  Packer packer(*source, config_.data, state.data);
  // The job's peak: this rank's measured rate times the ranks, in bf16
  // where the device has bf16 units (an fp32 run is measured against them too).
  const auto peak_dtype = bf16_is_fast(config_.train.device) ? at::kBFloat16 : at::kFloat;
  peak_flops_ = measure_matmul_peak(device_, peak_dtype) * mesh_.layout().world();
  logger_->line("matrix-product peak measured: " + format("%.1f", peak_flops_ / 1e9) + " GFLOP/s (" +
                c10::toString(peak_dtype) + "); computing in " + config_.train.precision);
  first_step_ = state.step;
  if (config_.memory.plan == "auto") plan_memory();
  if (adaptive_) calibrate_adaptive();
  reset_peak_memory(device_);

  TrainResult result;
  LossWatch watch(config_.train.max_skipped_steps);
  watch_stop_signals();
  int64_t window_tokens = 0;
  double window_seconds = 0;
  for (int64_t s = state.step; s < config_.train.steps; ++s) {
    if (traces() && s + 1 == config_.profile.start_step) start_trace(device_.is_cuda()), tracing_ = true;
    const auto start = std::chrono::steady_clock::now();
    const int64_t length = config_.data.seq_len_at(s);
    const double lr = learning_rate(config_.train, s);
    double grad_norm = 0;
    DataPosition position;
    double loss = 0;
    if (adaptive_) {
      loss = adaptive_step(packer, s, lr, grad_norm, position);
    } else {
      loss = step(packer.next(config_.sequences_per_step(s), length), s + 1, lr, grad_norm);
      position = packer.position();
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    elapsed_ += seconds;
    window_seconds += seconds;
    window_tokens += config_.train.global_batch_tokens;
    result.losses[s + 1] = loss;
    if (tracing_ && s + 1 == config_.profile.last_step()) write_trace();
    if (last_skipped_) {
      logger_->line(unlabelled_ ? watch.unlabelled(s + 1) : watch.skipped(s + 1, loss, grad_norm));
      logger_->metrics({{"step", s + 1}, {"skipped", true}});
    } else if (auto spike = watch.updated(s + 1, loss)) {
      logger_->line(*spike);
      logger_->metrics({{"step", s + 1}, {"loss_spike", loss}});
    }
    // The plan's check, on a step past the first (which warms caches up).
    if (plan_ && s + 1 == std::min(first_step_ + 3, config_.train.steps)) report_plan(seconds);
    if ((s + 1) % config_.log.interval == 0 || s + 1 == config_.train.steps) {
      log_step(s + 1, length, loss, lr, grad_norm, window_seconds, window_tokens);
      window_seconds = 0, window_tokens = 0;
    }
    // Between steps; the last step's evaluation is the one at the end.
    const auto& eval = config_.eval;
    if (eval.interval > 0 && (s + 1) % eval.interval == 0 && !(eval.at_end && s + 1 == config_.train.steps))
      evaluate(result, s + 1);
    const bool save =
        (config_.checkpoint.interval > 0 && (s + 1) % config_.checkpoint.interval == 0) || s + 1 == config_.train.steps;
    auto save_checkpoint = [&] {
      TrainState now{s + 1, position, at::detail::getDefaultCPUGenerator().get_state(), source->fingerprint()};
      on_masters([&] {
        logger_->line("checkpoint: " +
                      checkpoints_.save(*model_, *optimizer_, now, mesh_.group(Group::world), checkpoint_part()));
      });
    };
    if (save) save_checkpoint();
    // Preemption: a signal any rank received, agreed at this boundary.
    auto signal = at::full({1}, static_cast<int64_t>(stop_signal()), at::kLong);
    mesh_.group(Group::world).all_reduce(signal, ReduceOp::max);
    if (signal.item<int64_t>() != 0 && s + 1 < config_.train.steps) {
      if (!save) save_checkpoint();
      logger_->line("received " + std::string(strsignal(static_cast<int>(signal.item<int64_t>()))) +
                    ": stopped after step " + std::to_string(s + 1) +
                    " with its checkpoint; a job with checkpoint.resume: auto continues from there");
      return result;
    }
  }
  if (config_.eval.at_end) evaluate(result, config_.train.steps);
  if (!config_.checkpoint.export_hf.empty() && mesh_.rank() == 0) export_final();
  return result;
}

}  // namespace lt
