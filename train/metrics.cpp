#include "train/metrics.h"

#include <algorithm>

#include "core/model/model_size.h"
#include "core/util/bf16_support.h"
#include "core/util/resources.h"

namespace lt {

Metrics::Metrics(const Config& config, bool speaks, bool append)
    : config_(config), logger_(speaks ? std::make_unique<Logger>(config.run_dir, append, config.log.tensorboard)
                                      : std::make_unique<Logger>()),
      watch_(config.train.max_skipped_steps) {}

void Metrics::start(const at::Device& device, int ranks, int64_t first_step) {
  device_ = device;
  first_step_ = first_step;
  // MFU is against the fastest rate the device offers, whatever the run
  // computes in: a GPU's bf16 units; on a CPU the faster of its fp32 and
  // bf16 products (both measured: which wins depends on the CPU).
  peak_flops_ = peak_matmul_flops(device) * ranks;
  if (device.is_cuda()) {
    line("matrix-product peak measured: " + formatted("%.1f", peak_flops_ / 1e12) +
         " TFLOP/s (bf16, 8192^3); computing in " + name(config_.train.precision));
    return;
  }
  const auto& rates = cpu_matmul_rates();
  line("matrix-product peak measured: fp32 " + formatted("%.1f", rates.fp32 / 1e9) + " GFLOP/s" +
       (rates.bf16 > 0 ? ", bf16 " + formatted("%.1f", rates.bf16 / 1e9) + " GFLOP/s"
                       : std::string(", bf16 emulated (no bf16 instructions)")) +
       " per rank; MFU against the faster; computing in " + name(config_.train.precision) +
       (config_.train.precision != faster_precision(rates) ? " (" + name(faster_precision(rates)) + " would be faster)"
                                                           : ""));
}

void Metrics::step(const StepOutcome& o, const MoeStepStats& moe, const std::string& extra) {
  elapsed_ += o.seconds;
  window_seconds_ += o.seconds;
  window_tokens_ += config_.train.global_batch_tokens;
  if (o.skipped) {
    line(o.unlabelled ? watch_.unlabelled(o.step) : watch_.skipped(o.step, o.loss, o.grad_norm));
    record({{"step", o.step}, {"skipped", true}});
  } else if (auto spike = watch_.updated(o.step, o.loss)) {
    line(*spike);
    record({{"step", o.step}, {"loss_spike", o.loss}});
  }
  if (o.step % config_.log.interval == 0 || o.step == config_.train.steps) {
    log_step(o, moe, extra);
    window_seconds_ = 0, window_tokens_ = 0;
  }
}

void Metrics::log_step(const StepOutcome& o, const MoeStepStats& m, const std::string& extra) {
  const double tokens_per_s = window_tokens_ / window_seconds_;
  const double mfu = tokens_per_s * flops_per_token(config_.model, o.length) / peak_flops_;
  const int64_t peak = peak_memory_bytes(device_);
  const double eta = elapsed_ / (o.step - first_step_) * (config_.train.steps - o.step);
  std::string moe;
  nlohmann::ordered_json metrics = {{"step", o.step}, {"seq_len", o.length},       {"loss", o.loss},
                                    {"lr", o.lr},     {"grad_norm", o.grad_norm},  {"tokens_per_s", tokens_per_s},
                                    {"mfu", mfu},     {"peak_memory_bytes", peak}, {"elapsed_s", elapsed_}};
  if (config_.model.moe.enabled()) {
    // The last step's routing: the losses it added and each expert's load
    // against the mean (min, max, coefficient of variation over experts).
    moe = " | aux " + formatted("%.4f", m.balance_loss + m.z_loss) + " | load " + formatted("%.2f", m.load_min) + "-" +
          formatted("%.2f", m.load_max) + " cv " + formatted("%.3f", m.load_cv) + " | dropped " +
          formatted("%.1f%%", 100 * m.dropped);
    metrics.update({{"moe_balance_loss", m.balance_loss},
                    {"moe_z_loss", m.z_loss},
                    {"moe_load_min", m.load_min},
                    {"moe_load_max", m.load_max},
                    {"moe_load_cv", m.load_cv},
                    {"moe_dropped", m.dropped}});
  }
  line("step " + std::to_string(o.step) + "/" + std::to_string(config_.train.steps) + " | seq " +
       std::to_string(o.length) + " | loss " + formatted("%.4f", o.loss) + moe + extra + " | lr " +
       formatted("%.2e", o.lr) + " | grad " + formatted("%.3f", o.grad_norm) + " | " + human_count(tokens_per_s) +
       " tok/s | MFU " + formatted("%.1f%%", 100 * mfu) + " | mem " + human_bytes(peak) + " | ETA " +
       human_duration(eta));
  record(metrics);
}

}  // namespace lt
