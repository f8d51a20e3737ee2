// The run around the steps: it opens the checkpoint directory and the logs,
// starts from a checkpoint, an HF model or the seed, and then each step is
// trained, watched and logged by the metrics, evaluated when the evaluator
// says, saved when the checkpoint store says, and ended early, with a
// checkpoint, when any rank was told to stop.
#include <ATen/CPUGeneratorImpl.h>

#include <chrono>
#include <cstring>
#include <filesystem>

#include "core/hf/hf_weights.h"
#include "core/model/model_size.h"
#include "core/optim/lr_schedule.h"
#include "core/util/files.h"
#include "core/util/resources.h"
#include "core/util/stop_signal.h"
#include "train/layout_scorer.h"
#include "train/profile_window.h"
#include "train/trainer.h"

namespace lt {

TrainResult Trainer::run() {
  std::unique_ptr<DocumentSource> source;
  TrainState state = start(source);
  Packer packer(*source, config_.data, state.data);
  metrics_->start(device_, mesh_.layout().world(), first_step_);
  if (config_.memory.plan == PlanMode::automatic) plan_memory();
  if (adaptive_) calibrate_adaptive();
  reset_peak_memory(device_);
  ProfileWindow profile(config_.profile, config_.run_dir, mesh_.rank(), device_.is_cuda());
  watch_stop_signals();

  TrainResult result;
  for (int64_t s = state.step; s < config_.train.steps; ++s) {
    const int64_t step = s + 1;
    profile.before(step);
    const auto start = std::chrono::steady_clock::now();
    StepOutcome outcome{step, config_.data.seq_len_at(s)};
    outcome.lr = learning_rate(config_.train, s);
    StepResult trained;
    if (adaptive_) {
      trained = adaptive_step(packer, s, outcome.lr, state.data);
    } else {
      trained = this->step(packer.next(config_.sequences_per_step(s), outcome.length), step, outcome.lr);
      state.data = packer.position();
    }
    outcome.loss = trained.loss, outcome.grad_norm = trained.grad_norm;
    outcome.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    outcome.skipped = last_skipped_, outcome.unlabelled = unlabelled_;
    result.losses[step] = outcome.loss;
    if (auto traced = profile.after(step)) metrics_->line(*traced);
    // The plan's check, on a step past the first (which warms caches up).
    if (plan_ && step == std::min(first_step_ + 3, config_.train.steps)) report_plan(step, outcome.seconds);
    metrics_->step(outcome, moe_stats_, adaptive_ ? describe_adaptive_step() : "");
    if (evaluator_->due(step)) evaluate(result, step);
    state.step = step;
    const bool saved = checkpoints_.due(step, config_.train.steps);
    if (saved) save(state);
    // Preemption: a signal any rank received, agreed at this boundary.
    auto signal = at::full({1}, static_cast<int64_t>(stop_signal()), at::kLong);
    mesh_.group(Group::world).all_reduce(signal, ReduceOp::max);
    if (signal.item<int64_t>() != 0 && step < config_.train.steps) {
      if (!saved) save(state);
      metrics_->line("received " + std::string(strsignal(static_cast<int>(signal.item<int64_t>()))) +
                     ": stopped after step " + std::to_string(step) +
                     " with its checkpoint; a job with checkpoint.resume: auto continues from there");
      return result;
    }
  }
  if (evaluator_->at_end()) evaluate(result, config_.train.steps);
  if (config_.checkpoint.export_hf != ExportDtype::none && mesh_.rank() == 0) export_final();
  return result;
}

TrainState Trainer::start(std::unique_ptr<DocumentSource>& source) {
  const auto resume_from =
      checkpoints_.open(config_.checkpoint.resume, config_.checkpoint.move_aside, mesh_.group(Group::world));
  // Rank 0 speaks for the job; a resumed run appends to its files.
  metrics_ = std::make_unique<Metrics>(config_, mesh_.rank() == 0, resume_from.has_value());
  evaluator_ = std::make_unique<Evaluator>(config_, *metrics_, mesh_.rank() == 0);
  if (!checkpoints_.moved_aside().empty()) metrics_->line(checkpoints_.moved_aside());
  if (!resume_from && config_.checkpoint.resume == "auto")
    metrics_->line("no checkpoint in " + config_.checkpoint_dir() + ", starting fresh");
  TrainState state;
  agree_on(mesh_.group(Group::world), [&] {
    source = make_document_source(config_.data, config_.model.vocab_size, config_.train.seed, Split::Train);
    if (resume_from) state = restore(*resume_from, source->fingerprint());
    else if (!config_.init.from_hf.empty()) initialize_from_hf();
  });
  state.data_fingerprint = source->fingerprint();
  first_step_ = state.step;
  describe_run();
  return state;
}

// The resolved recipe (also into run_dir/config.yaml) and the job's shape.
void Trainer::describe_run() {
  const std::string resolved = to_yaml(config_);
  if (mesh_.rank() == 0) write_text_synced(config_.run_dir + "/config.yaml", resolved + "\n");
  metrics_->line("# resolved config (" + config_.source_file + ")\n" + resolved);
  const auto& d = mesh_.layout().degrees();
  metrics_->line("model: " + human_count(static_cast<double>(flop_parameters(config_.model))) +
                 " parameters (non-embedding + head), device " + device_.str() + ", " +
                 std::to_string(at::get_num_threads()) + " threads per rank; " + std::to_string(d.world()) +
                 " ranks (dp " + std::to_string(d.dp) + ", tp " + std::to_string(d.tp) + ", pp " +
                 std::to_string(d.pp) + ", ulysses " + std::to_string(d.ulysses) + ", ring " + std::to_string(d.ring) +
                 ", ep " + std::to_string(d.ep) + ", zero " + std::to_string(config_.parallel.zero) + ", " +
                 std::to_string(state_.bucket_count()) + " gradient buckets)");
}

TrainState Trainer::restore(const std::string& path, const nlohmann::json& data_fingerprint) {
  TrainState state;
  if (config_.parallel.zero == 3) {  // straight into this rank's shards
    load_checkpoint(path, *rank_.model, &state_.optimizer(), &state, /*weights_in_segments=*/true);
    if (state_.chunks()) state_.chunks()->refresh();  // the resident chunks' device copies
  } else {
    on_masters([&] { load_checkpoint(path, *rank_.model, &state_.optimizer(), &state); });
  }
  check_data_fingerprint(path, state.data_fingerprint, data_fingerprint);
  state_.masters_changed();
  at::Generator generator = at::detail::getDefaultCPUGenerator();
  generator.set_state(state.rng);
  metrics_->line("resumed from " + path + " at step " + std::to_string(state.step));
  return state;
}

// The run starts from a Hugging Face model's weights, with a fresh optimizer.
void Trainer::initialize_from_hf() {
  on_masters([&] { load_hf_weights(config_.init.from_hf, *rank_.model); });
  state_.masters_changed();
  metrics_->line("initialized from " + config_.init.from_hf);
}

// Every rank writes its part (checkpoint.h): the first replica of every
// (tp, pp) position, or under expert parallelism of each set of experts,
// its weights (the weights outside experts are then written by several
// ranks, copies the reader tolerates); the optimizer state is written by
// those too, or with ZeRO by every rank, each its own shard; under ZeRO-3
// every rank writes its shards of both, gathering nothing.
void Trainer::save(const TrainState& state) {
  TrainState now = state;
  now.rng = at::detail::getDefaultCPUGenerator().get_state();
  const bool whole = mesh_.group(Group::model).size() == 1 && mesh_.group(Group::ep).size() == 1;
  const int64_t zero = config_.parallel.zero;
  const auto part =
      CheckpointStore::part(mesh_.rank(), whole, mesh_.group(Group::ep_dp).rank() == 0, zero >= 1, zero == 3);
  auto save = [&] {
    metrics_->line("checkpoint: " +
                   checkpoints_.save(*rank_.model, state_.optimizer(), now, mesh_.group(Group::world), part));
  };
  if (zero == 3) save();
  else on_masters(save);
}

// On the training layout, every rank its part and the dp replicas a share
// of the batches (under ZeRO-3 in lockstep: the gathers are collectives of
// the replicas), the weights outside layers gathered meanwhile.
void Trainer::evaluate(TrainResult& result, int64_t step) {
  const auto score = layout_scorer(*rank_.model, mesh_, config_.parallel, device_, compute_dtype(config_.train));
  state_.with_step_weights(
      [&] { evaluator_->run(score, replica_share(mesh_, config_.parallel.zero == 3), step, result); });
}

// The final checkpoint, whatever the layout that wrote it, as an HF model
// in run_dir/hf (replacing this run's export of an earlier end).
void Trainer::export_final() {
  const std::string out = config_.run_dir + "/hf";
  LlamaForCausalLM whole(config_.model);
  load_checkpoint(*checkpoints_.newest(), *whole, nullptr, nullptr);
  HfExportOptions options;
  options.dtype = name(config_.checkpoint.export_hf);
  options.replace = true;
  const auto copied = export_hf(config_.model, *whole, out, options, config_.init.from_hf);
  metrics_->line("exported to " + out + " (" + options.dtype + ")" + describe_copied(copied, config_.init.from_hf));
}

}  // namespace lt
