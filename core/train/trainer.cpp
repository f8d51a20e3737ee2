#include "core/train/trainer.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>

#include "core/data/packer.h"
#include "core/train/loss.h"
#include "core/train/lr_schedule.h"
#include "core/util/error.h"
#include "core/util/fault_injection.h"
#include "core/util/resources.h"
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
  check(initialized, "the trainer needs MPI: create an lt::MpiSession first");
  return std::make_unique<Mesh>(Layout(resolve_degrees(config, 1)), MPI_COMM_SELF, config.parallel.timeout_s);
}

}  // namespace

void check_trainable(const ParallelConfig& p) {
  if (p.tp > 1 || p.pp > 1 || p.ep > 1)
    fail("parallel: this build trains with data and sequence parallelism; tp, pp and ep are laid out and "
         "planned (longtrain plan) but not yet trained: set them to 1");
}

double flops_per_token(const ModelConfig& model, int64_t seq_len) {
  return 6.0 * flop_parameters(model) + 6.0 * model.num_layers * model.hidden_size * seq_len;
}

Trainer::Trainer(Config config, Mesh* mesh)
    : config_(std::move(config)), own_mesh_(mesh ? nullptr : solo_mesh(config_)), mesh_(mesh ? *mesh : *own_mesh_),
      replicas_(mesh_.group(Group::dp_sp)), device_(device_for(config_.train.device, mesh_.local_rank())),
      checkpoints_(config_.checkpoint_dir(), config_.checkpoint.keep) {
  check_trainable(config_.parallel);
  at::set_num_threads(static_cast<int>(default_threads(config_.train.threads, mesh_.local_size())));
  at::manual_seed(config_.train.seed);
  // Every rank initialises from the same seed: the replicas start equal.
  model_ = LlamaForCausalLM(config_.model);
  model_->initialize(config_.train.seed);
  model_->to(device_);
#ifdef LT_WITH_CUDA
  if (device_.is_cuda()) mesh_.enable_nccl(device_.index());
#endif
  std::vector<NamedParameter> params;
  for (auto& item : model_->named_parameters()) params.push_back({item.key(), item.value()});
  const auto& p = config_.parallel;
  if (p.sp_degree() > 1) model_->set_attention(sequence_parallel_attention(mesh_));
  buckets_ = std::make_unique<GradientBuckets>(
      params, replicas_,
      DataParallelOptions{static_cast<int64_t>(p.bucket_mb * (1 << 20)), p.overlap, p.zero == 1});
  const auto& t = config_.train;
  optimizer_ = std::make_unique<AdamW>(buckets_->segments(), AdamWOptions{t.beta1, t.beta2, t.eps, t.weight_decay});
}

std::optional<std::string> Trainer::resume_point() const {
  checkpoints_.remove_partial(mesh_.group(Group::world));
  if (config_.checkpoint.resume == "auto") return checkpoints_.latest();
  if (config_.checkpoint.resume != "none") return resolve_checkpoint(config_.checkpoint.resume);
  return std::nullopt;
}

TrainState Trainer::restore(const std::string& path) {
  TrainState state;
  load_checkpoint(path, *model_, optimizer_.get(), &state);
  at::Generator generator = at::detail::getDefaultCPUGenerator();
  generator.set_state(state.rng);
  logger_->line("resumed from " + path + " at step " + std::to_string(state.step));
  return state;
}

// Rank 0 writes the (replicated) weights; the optimizer state is written by
// rank 0 alone, or with ZeRO-1 by every replica, each its own shard.
CheckpointStore::Part Trainer::checkpoint_part() {
  CheckpointStore::Part part;
  part.model = mesh_.rank() == 0;
  if (config_.parallel.zero == 1) {
    char name[64];
    std::snprintf(name, sizeof(name), "optimizer.%05d.safetensors", replicas_.rank());
    part.optimizer_file = name;
  } else if (mesh_.rank() == 0) {
    part.optimizer_file = "optimizer.safetensors";
  }
  return part;
}

double Trainer::clip_gradients() {
  const double total = buckets_->grad_norm();
  const double max_norm = config_.train.grad_clip;
  if (max_norm > 0 && total > max_norm) buckets_->scale_grads(max_norm / (total + 1e-6));
  return total;
}

double Trainer::step(const Batch& batch, int64_t step, double lr, double& grad_norm) {
  // Every micro-batch's summed loss is divided by the valid tokens of the
  // whole global batch, so accumulation and the sum over replicas give
  // exactly the full-batch mean, for any dp degree.
  const double valid = static_cast<double>(std::max<int64_t>(1, batch.valid_tokens()));
  // This dp rank's rows; of each, this sequence-parallel rank's columns.
  auto& dp = mesh_.group(Group::dp);
  const int64_t rows = batch.size() / dp.size();
  Batch mine = batch.rows(dp.rank() * rows, rows);
  if (config_.parallel.sp_degree() > 1) {
    const auto c = mesh_.coord();
    const auto layout = sequence_layout(config_.parallel.sp);
    mine = pad_sequences(mine, layout);
    mine = shard_sequences(mine, sequence_columns(mine.tokens.size(1), layout, c.ulysses, c.ring));
  }
  const int64_t micro = std::min(config_.train.micro_batch_size, rows);
  buckets_->zero_grad();
  auto total = at::zeros({1}, at::kDouble);
  for (int64_t first = 0; first < mine.size(); first += micro) {
    if (first + micro >= mine.size()) buckets_->arm();
    auto loss = loss_sum(*model_, mine.rows(first, std::min(micro, mine.size() - first)).to(device_));
    (loss / valid).backward();
    total += loss.detach().to(at::kCPU, at::kDouble);
    if (first == 0) inject_fault(mesh_.rank(), step);
  }
  buckets_->finish();
  replicas_.all_reduce(total);
  grad_norm = clip_gradients();
  optimizer_->step(lr);
  buckets_->gather_parameters();
  return total.item<double>() / valid;
}

void Trainer::log_step(int64_t step, int64_t length, double loss, double lr, double grad_norm, double seconds,
                       int64_t tokens) {
  const double tokens_per_s = tokens / seconds;
  const double mfu = tokens_per_s * flops_per_token(config_.model, length) / peak_flops_;
  const int64_t peak = peak_memory_bytes(device_);
  const double eta = elapsed_ / (step - first_step_) * (config_.train.steps - step);
  logger_->line("step " + std::to_string(step) + "/" + std::to_string(config_.train.steps) + " | seq " +
                std::to_string(length) + " | loss " +
                format("%.4f", loss) + " | lr " + format("%.2e", lr) + " | grad " + format("%.3f", grad_norm) + " | " +
                human_count(tokens_per_s) + " tok/s | MFU " + format("%.1f%%", 100 * mfu) + " | mem " +
                human_bytes(peak) + " | ETA " + human_duration(eta));
  logger_->metrics({{"step", step}, {"seq_len", length}, {"loss", loss}, {"lr", lr}, {"grad_norm", grad_norm},
                    {"tokens_per_s", tokens_per_s}, {"mfu", mfu}, {"peak_memory_bytes", peak},
                    {"elapsed_s", elapsed_}});
}

void Trainer::evaluate(TrainResult& result) {
  if (config_.eval.sequences > 0) {
    result.eval = evaluate_loss(*model_, config_, device_);
    logger_->line(describe(*result.eval));
    logger_->metrics({{"eval_loss", result.eval->loss}, {"eval_perplexity", result.eval->perplexity}});
  }
  if (config_.data.source == "passkey" && config_.eval.passkey_samples > 0) {
    result.passkey = evaluate_passkey(*model_, config_, config_.data.seq_len, device_);
    logger_->line(describe(*result.passkey, config_.data.passkey.digits));
    logger_->metrics({{"passkey_length", result.passkey->length},
                      {"passkey_exact", result.passkey->exact_match},
                      {"passkey_digit_accuracy", result.passkey->digit_accuracy}});
  }
}

TrainResult Trainer::run() {
  const auto resume_from = resume_point();
  // Rank 0 speaks for the job; a resumed run appends to its files.
  logger_ = mesh_.rank() == 0 ? std::make_unique<Logger>(config_.run_dir, resume_from.has_value())
                              : std::make_unique<Logger>();
  if (!resume_from && config_.checkpoint.resume == "auto")
    logger_->line("no checkpoint in " + config_.checkpoint_dir() + ", starting fresh");
  TrainState state = resume_from ? restore(*resume_from) : TrainState{};
  const std::string resolved = to_yaml(config_);
  if (mesh_.rank() == 0) std::ofstream(config_.run_dir + "/config.yaml") << resolved << "\n";
  logger_->line("# resolved config (" + config_.source_file + ")\n" + resolved);
  const auto& d = mesh_.layout().degrees();
  logger_->line("model: " + human_count(static_cast<double>(flop_parameters(config_.model))) +
                " parameters (non-embedding + head), device " + device_.str() + ", " +
                std::to_string(at::get_num_threads()) + " threads per rank; " + std::to_string(d.world()) +
                " ranks (dp " + std::to_string(d.dp) + ", ulysses " + std::to_string(d.ulysses) + ", ring " +
                std::to_string(d.ring) + ", zero " +
                std::to_string(config_.parallel.zero) + ", " +
                std::to_string(buckets_->bucket_count()) + " gradient buckets)");

  auto source = make_document_source(config_.data, config_.model.vocab_size, config_.train.seed, Split::Train);
  Packer packer(*source, config_.data, state.data);
  // The job's peak: this rank's measured rate times the ranks.
  peak_flops_ = measure_matmul_peak(device_) * mesh_.layout().world();
  logger_->line("matrix-product peak measured: " + format("%.1f", peak_flops_ / 1e9) + " GFLOP/s");
  reset_peak_memory(device_);

  TrainResult result;
  first_step_ = state.step;
  int64_t window_tokens = 0;
  double window_seconds = 0;
  for (int64_t s = state.step; s < config_.train.steps; ++s) {
    const auto start = std::chrono::steady_clock::now();
    const int64_t length = config_.data.seq_len_at(s);
    const Batch batch = packer.next(config_.sequences_per_step(s), length);
    const double lr = learning_rate(config_.train, s);
    double grad_norm = 0;
    const double loss = step(batch, s + 1, lr, grad_norm);
    if (!std::isfinite(loss)) fail("loss became " + std::to_string(loss) + " at step " + std::to_string(s + 1) +
                                   "; lower train.lr or raise train.warmup_steps");
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    elapsed_ += seconds;
    window_seconds += seconds;
    window_tokens += batch.tokens.numel();
    result.losses[s + 1] = loss;
    if ((s + 1) % config_.log.interval == 0 || s + 1 == config_.train.steps) {
      log_step(s + 1, length, loss, lr, grad_norm, window_seconds, window_tokens);
      window_seconds = 0, window_tokens = 0;
    }
    const bool save = (config_.checkpoint.interval > 0 && (s + 1) % config_.checkpoint.interval == 0) ||
                      s + 1 == config_.train.steps;
    if (save) {
      TrainState now{s + 1, packer.position(), at::detail::getDefaultCPUGenerator().get_state()};
      const auto path = checkpoints_.save(*model_, *optimizer_, now, mesh_.group(Group::world), checkpoint_part());
      logger_->line("checkpoint: " + path);
    }
  }
  // The replicas are equal: rank 0 evaluates for the job, on its own.
  if (config_.eval.at_end && mesh_.rank() == 0) {
    model_->set_attention(attention);
    evaluate(result);
  }
  return result;
}

}  // namespace lt
