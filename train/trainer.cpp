#include "train/trainer.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>

#include "core/util/bf16_support.h"
#include "core/util/error.h"
#include "core/util/fault_injection.h"
#include "core/util/resources.h"
#include "offload/profiler/memory_tracker.h"
#include "parallel/sequence/sequence_parallel.h"

namespace lt {
namespace {

std::unique_ptr<Mesh> solo_mesh(const Config& config) {
  int initialized = 0;
  MPI_Initialized(&initialized);
  LT_CHECK(initialized, "the trainer needs MPI: create an lt::MpiSession first");
  return std::make_unique<Mesh>(Layout(resolve_degrees(config, 1)), MPI_COMM_SELF, config.parallel.timeout_s,
                                device_transport(config));
}

}  // namespace

DeviceTransport device_transport(const Config& config) {
  if (config.train.device == DeviceKind::cuda) return DeviceTransport::nccl;
  return config.parallel.emulate_nccl ? DeviceTransport::emulated_nccl : DeviceTransport::host;
}

at::Device bring_up_device(const Config& config, Mesh& mesh) {
  const at::Device device = device_for(config.train.device, mesh.local_rank());
  make_current(device);
  mesh.enable_device(device);
  return device;
}

void check_trainable(const Config& c) {
  if (c.parallel.ep > 1 && !c.model.moe.enabled())
    fail("parallel.ep=" + std::to_string(c.parallel.ep) +
         " splits the experts of a mixture-of-experts model, and this model has none (model.moe.experts: 0): "
         "set parallel.ep to 1");
}

Trainer::Trainer(Config config, Mesh* mesh)
    : config_(std::move(config)), own_mesh_(mesh ? nullptr : solo_mesh(config_)), mesh_(mesh ? *mesh : *own_mesh_),
      replicas_(mesh_.group(Group::dp_sp)), device_(bring_up_device(config_, mesh_)),
      checkpoints_(config_.checkpoint_dir(), config_.checkpoint.keep, config_.checkpoint.interval) {
  check_trainable(config_);
  config_.train.precision = resolve_precision(config_.train.precision, config_.train.device);
  if (config_.train.bf16()) check_bf16_device(device_);
  track_device_memory();
  at::set_num_threads(static_cast<int>(default_threads(config_.train.threads, mesh_.local_size())));
  at::manual_seed(config_.train.seed);
  // Every rank initialises from the same seed: each holds its part of the
  // same weights, and replicas start equal. The state owner fetches and
  // gathers a layer's weights before it runs (it takes them over next; the
  // layers run later).
  rank_ = build_rank_model(config_, mesh_, device_, state_.layer_fetch(config_));
  state_.own(config_, mesh_, rank_, device_);
  if (config_.data.packing == Packing::adaptive) {
    const auto& a = config_.parallel.adaptive;
    adaptive_ = std::make_unique<AdaptiveSequenceParallel>(
        mesh_, a, adaptive_max_group(a, mesh_.layout().world(), config_.model.num_heads));
  }
  // Stages pass activations in the compute dtype.
  pipeline_ = std::make_unique<Pipeline>(mesh_.group(Group::pp),
                                         at::TensorOptions().device(device_).dtype(compute_dtype(config_.train)));
}

void Trainer::on_masters(const std::function<void()>& fn) { state_.on_masters(fn); }

// This dp rank's rows; of each, this sequence-parallel rank's columns,
// padded so that sp (and tp's sequence split) divide them.
Batch Trainer::local_batch(const Batch& batch) {
  auto& dp = mesh_.group(Group::dp);
  const int64_t rows = batch.size() / dp.size();
  return sequence_part(batch.rows(dp.rank() * rows, rows), config_.parallel, mesh_).batch;
}

at::Tensor Trainer::stage_forward(const Batch& micro, const at::Tensor& input) {
  if (!rank_.model->shard().last_stage) return rank_.model->forward(model_input(micro), input);
  return head_loss(*rank_.model, rank_.model->head_input(model_input(micro), input), micro.labels, rank_.loss_sum,
                   config_.memory);
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
  MoeBalance* moe = rank_.model->shard().moe.get();
  const int64_t global_micro_batches = mesh_.group(Group::dp).size() * static_cast<int64_t>(micros.size());
  if (moe) moe->begin_step(mine.tokens.numel() * replicas_.size(), batch.size(), global_micro_batches);
  const double loss = run_micro_batches(micros, valid, step);
  if (moe) moe_stats_ = moe->end_step([this](at::Tensor& t) { mesh_.group(Group::world).all_reduce(t); });
  return loss;
}

double Trainer::run_micro_batches(const std::vector<Batch>& micros, double valid, int64_t step) {
  const auto& shard = rank_.model->shard();
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
  if (fault_at(mesh_.rank(), step) == "dropgrad") state_.drop_first_bucket();
  work.forward = [&](int m, const at::Tensor& input) {
    if (moe) moe->set_micro_batch(m);
    auto out = stage_forward(micros[m], input);
    if (poisoned) out = out * std::nan("");
    if (!shard.last_stage) return out;
    total += out.detach().to(at::kCPU, at::kDouble);
    return out / valid;
  };
  work.before_backward = [&](int m) {
    if (moe) moe->set_micro_batch(m);  // its recomputation finds the forward's routing
    state_.begin_backward(m + 1 == static_cast<int>(micros.size()));
  };
  work.after_backward = [&](int) { state_.end_backward(); };
  state_.begin_step();
  pipeline_->run(static_cast<int>(micros.size()), work);
  if (micros.empty()) state_.begin_backward(true);  // a rank with nothing to run still joins the reductions
  state_.finish_backward();
  // The last stage has the loss; every tp rank of it the same one.
  mesh_.group(Group::pp).all_reduce(total);
  replicas_.all_reduce(total);
  return total.item<double>() / valid;
}

// `labelled`: some token of the step's global batch has a label. One with
// none (documents of a single token) is skipped whole, not run as an update
// of zero gradients that would still move AdamW's moments and decay.
StepResult Trainer::update(bool labelled, const std::function<double()>& gradients, double lr,
                           const std::function<void(double loss)>& inspect) {
  unlabelled_ = !labelled;
  if (unlabelled_) {
    last_skipped_ = true;
    return {std::nan(""), 0};
  }
  reset_device_peak(device_);
  const int64_t before = device_bytes(device_);
  state_.begin_update(lr);
  const double loss = gradients();
  last_activation_bytes_ = device_peak_bytes(device_) - before;
  if (inspect) inspect(loss);
  const double grad_norm = state_.clip(mesh_.group(Group::model), config_.train.grad_clip);
  // Every rank has the same loss and norm: all skip, or none.
  last_skipped_ = !std::isfinite(loss) || !std::isfinite(grad_norm);
  if (last_skipped_) {
    LT_CHECK(!state_.overlapped_update(),
             "loss " + std::to_string(loss) +
                 ": memory.overlap_update already updated the chunks during "
                 "backward, so this step cannot be skipped: set memory.overlap_update: false to skip such steps");
    return {loss, grad_norm};
  }
  state_.update(lr, clips(grad_norm));
  return {loss, grad_norm};
}

StepResult Trainer::step(const Batch& batch, int64_t step, double lr, const std::function<void(double loss)>& inspect) {
  return update(
      batch.valid_tokens() > 0, [&] { return compute_gradients(batch, step); }, lr, inspect);
}

StepResult Trainer::step(const std::vector<Batch>& documents, const SpPlan& plan, int64_t step, double lr) {
  const bool labelled =
      std::any_of(documents.begin(), documents.end(), [](const Batch& d) { return d.valid_tokens() > 0; });
  return update(
      labelled, [&] { return compute_gradients(documents, plan, step); }, lr);
}

}  // namespace lt
