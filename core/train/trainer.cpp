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
#include "core/util/resources.h"

namespace lt {
namespace {

std::string format(const char* pattern, double value) {
  char buffer[64];
  std::snprintf(buffer, sizeof(buffer), pattern, value);
  return buffer;
}

}  // namespace

double flops_per_token(const ModelConfig& model, int64_t seq_len) {
  return 6.0 * flop_parameters(model) + 6.0 * model.num_layers * model.hidden_size * seq_len;
}

Trainer::Trainer(Config config)
    : config_(std::move(config)), device_(device_for(config_.train.device)),
      checkpoints_(config_.checkpoint_dir(), config_.checkpoint.keep) {
  at::set_num_threads(static_cast<int>(default_threads(config_.train.threads)));
  at::manual_seed(config_.train.seed);
  model_ = LlamaForCausalLM(config_.model);
  model_->initialize(config_.train.seed);
  model_->to(device_);
  std::vector<NamedParameter> params;
  for (auto& item : model_->named_parameters()) params.push_back({item.key(), item.value()});
  const auto& t = config_.train;
  optimizer_ = std::make_unique<AdamW>(std::move(params), AdamWOptions{t.beta1, t.beta2, t.eps, t.weight_decay});
}

std::optional<std::string> Trainer::resume_point() const {
  checkpoints_.remove_partial();
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

double Trainer::clip_gradients() {
  std::vector<at::Tensor> norms;
  for (const auto& p : model_->parameters())
    if (p.grad().defined()) norms.push_back(p.grad().to(at::kFloat).norm().pow(2));
  const double total = std::sqrt(at::stack(norms).sum().item<double>());
  const double max_norm = config_.train.grad_clip;
  if (max_norm > 0 && total > max_norm) {
    at::NoGradGuard no_grad;
    for (auto& p : model_->parameters())
      if (p.grad().defined()) p.mutable_grad().mul_(max_norm / (total + 1e-6));
  }
  return total;
}

double Trainer::step(const Batch& batch, double lr, double& grad_norm) {
  // Every micro-batch's summed loss is divided by the valid tokens of the
  // whole global batch, so accumulation gives exactly the full-batch mean.
  const double valid = static_cast<double>(std::max<int64_t>(1, batch.valid_tokens()));
  const int64_t micro = config_.train.micro_batch_size;
  optimizer_->zero_grad();
  double total = 0;
  for (int64_t first = 0; first < batch.size(); first += micro) {
    auto loss = loss_sum(*model_, batch.rows(first, micro).to(device_));
    (loss / valid).backward();
    total += loss.item<double>();
  }
  grad_norm = clip_gradients();
  optimizer_->step(lr);
  return total / valid;
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
  logger_ = std::make_unique<Logger>(config_.run_dir, resume_from.has_value());  // a resumed run appends
  if (!resume_from && config_.checkpoint.resume == "auto")
    logger_->line("no checkpoint in " + config_.checkpoint_dir() + ", starting fresh");
  TrainState state = resume_from ? restore(*resume_from) : TrainState{};
  const std::string resolved = to_yaml(config_);
  std::ofstream(config_.run_dir + "/config.yaml") << resolved << "\n";
  logger_->line("# resolved config (" + config_.source_file + ")\n" + resolved);
  logger_->line("model: " + human_count(static_cast<double>(flop_parameters(config_.model))) +
                " parameters (non-embedding + head), device " + device_.str() + ", " +
                std::to_string(at::get_num_threads()) + " threads");

  auto source = make_document_source(config_.data, config_.model.vocab_size, config_.train.seed, Split::Train);
  Packer packer(*source, config_.data, state.data);
  peak_flops_ = measure_matmul_peak(device_);
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
    const double loss = step(batch, lr, grad_norm);
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
      logger_->line("checkpoint: " + checkpoints_.save(*model_, *optimizer_, now));
    }
  }
  if (config_.eval.at_end) evaluate(result);
  return result;
}

}  // namespace lt
