// One rank's training: packed global batch -> this dp rank's rows, of each
// this sp rank's columns -> micro-batches through this pipeline stage's
// 1F1B schedule (its layers, its tensor-parallel slices) -> loss averaged
// over the valid tokens of the whole global batch -> every gradient reduced
// over the ranks holding its parameter (parameter_state.h) -> clip by the
// norm over all shards -> AdamW on this rank's shards. Around the steps, the
// run's parts: the checkpoint store (when and what to save), the metrics
// (what to log), the evaluator (when to evaluate), the profile window. One
// process alone is a mesh of one rank: the same code path.
#pragma once
#include <map>
#include <memory>
#include <optional>

#include "core/config/config.h"
#include "core/data/packer.h"
#include "offload/activations/memory_policy.h"
#include "offload/profiler/planner.h"
#include "parallel/adaptive/adaptive_sp.h"
#include "parallel/mesh/mesh.h"
#include "parallel/pipeline/pipeline.h"
#include "train/checkpoint.h"
#include "train/evaluator.h"
#include "train/metrics.h"
#include "train/model_state.h"
#include "train/rank_model.h"

namespace lt {

// A step's mean loss and its gradients' norm before clipping.
struct StepResult {
  double loss = 0, grad_norm = 0;
};

// Fails for the parallel dimensions this build cannot train yet.
void check_trainable(const Config& config);

// How the job's groups carry device tensors: NCCL on CUDA, NCCL's emulation
// with parallel.emulate_nccl, else MPI alone.
DeviceTransport device_transport(const Config& config);
// This rank's device, made current on this thread, with the mesh's device
// transport started: what a job does first once its mesh exists, before
// it builds any model or state.
at::Device bring_up_device(const Config& config, Mesh& mesh);

// Runs a Config end to end. Throws lt::Error on user errors.
class Trainer {
 public:
  // One rank of `mesh` (collective: every rank constructs and runs its
  // Trainer), or without a mesh, a process of its own.
  explicit Trainer(Config config, Mesh* mesh = nullptr);
  TrainResult run();

  // Forward and backward of a global batch (step `step`, 1-based): returns
  // its mean loss and leaves in this rank's parameters their gradients,
  // reduced over every rank holding them (with ZeRO-1: this rank's shards).
  double compute_gradients(const Batch& batch, int64_t step);
  // compute_gradients, clipping and the optimizer's update with learning
  // rate `lr`: one training step. `inspect`, if given, sees the step's loss
  // once the gradients are reduced, before clipping and the update.
  StepResult step(const Batch& batch, int64_t step, double lr, const std::function<void(double loss)>& inspect = {});
  // data.packing: adaptive: the same for a step's documents (one row each),
  // run as `plan` says, every rank with the same plan.
  double compute_gradients(const std::vector<Batch>& documents, const SpPlan& plan, int64_t step);
  StepResult step(const std::vector<Batch>& documents, const SpPlan& plan, int64_t step, double lr);
  AdaptiveSequenceParallel* adaptive() { return adaptive_.get(); }
  LlamaForCausalLMImpl& model() { return *rank_.model; }
  AdamW& optimizer() { return state_.optimizer(); }
  ChunkManager* chunks() { return state_.chunks(); }
  // The state of each replica set's parameters (every parameter not in chunks).
  const std::vector<std::unique_ptr<ParameterState>>& states() const { return state_.states(); }
  const OverlappedUpdate* overlapped_update() const { return state_.overlapped_update(); }
  // What this rank's optimizer updates: every parameter's part it owns.
  std::vector<ParamSegment> segments() const { return state_.segments(); }

  // memory.plan: auto: the plan chosen before the first step.
  const std::optional<MemoryPlan>& memory_plan() const { return plan_; }
  // The mixture-of-experts statistics of the last compute_gradients.
  const MoeStepStats& moe_stats() const { return moe_stats_; }
  // Device bytes the last step's forward and backward added at their peak.
  int64_t last_activation_bytes() const { return last_activation_bytes_; }
  // Runs `fn` with every parameter whole on its fp32 master (offloaded
  // chunks on the host, ZeRO-3's shards gathered): to save, load or
  // initialise them.
  void on_masters(const std::function<void()>& fn);

 private:
  // The step (trainer.cpp).
  Batch local_batch(const Batch& batch);
  // Forward and backward of this rank's micro-batches, each loss divided by
  // `valid`; the gradients reduced over the replicas. Returns the summed
  // loss of every rank's micro-batches, divided by `valid`.
  double run_micro_batches(const std::vector<Batch>& micros, double valid, int64_t step);
  // Clipping and the optimizer's update after `gradients` (which returns the loss).
  StepResult update(bool labelled, const std::function<double()>& gradients, double lr,
                    const std::function<void(double loss)>& inspect = {});
  // This stage's forward of a micro-batch from `input` (what the previous
  // stage sent): its hidden states, or on the last stage the summed loss.
  at::Tensor stage_forward(const Batch& micro, const at::Tensor& input);
  bool clips(double grad_norm) const { return config_.train.grad_clip > 0 && grad_norm > config_.train.grad_clip; }

  // The run around the steps (run.cpp): opening the checkpoint directory
  // and the logs, restoring or initialising the weights, saving,
  // evaluating, exporting.
  TrainState start(std::unique_ptr<DocumentSource>& source);
  TrainState restore(const std::string& path, const nlohmann::json& data_fingerprint);
  void initialize_from_hf();
  void describe_run();
  void save(const TrainState& state);
  void evaluate(TrainResult& result, int64_t step);
  void export_final();

  // data.packing: adaptive (adaptive_training.cpp).
  void calibrate_adaptive();
  double profile_document(int64_t length, int group, int64_t* activation_bytes = nullptr);
  StepResult adaptive_step(Packer& packer, int64_t step, double lr, DataPosition& position);
  std::string describe_adaptive_step() const;

  // memory.plan: auto (memory_planning.cpp).
  Batch probe_batch();
  void probe_step(const Batch& probe);
  void plan_memory();
  void report_plan(int64_t step, double step_seconds);

  Config config_;
  std::unique_ptr<Mesh> own_mesh_;
  Mesh& mesh_;
  Communicator& replicas_;  // dp x sp: who shares this rank's weights
  at::Device device_;
  // This rank's model, fixed once built, with its loss; the owner of its
  // state (weights, gradients, optimizer); the pipeline.
  RankModel rank_;
  ModelState state_;
  std::unique_ptr<Pipeline> pipeline_;
  // The last step.
  int64_t last_activation_bytes_ = 0;
  bool last_skipped_ = false;  // its loss or gradients were not finite, or it had no label: no update
  bool unlabelled_ = false;    // it had no token with a label
  MoeStepStats moe_stats_;
  // The run's parts.
  std::unique_ptr<Metrics> metrics_;
  std::unique_ptr<Evaluator> evaluator_;
  CheckpointStore checkpoints_;
  std::optional<MemoryPlan> plan_;  // memory.plan: auto
  int64_t first_step_ = 0;
  // data.packing: adaptive: the groups, the next step's documents (planned
  // during this step), and this step's plan and measured phase.
  std::unique_ptr<AdaptiveSequenceParallel> adaptive_;
  std::vector<Batch> next_documents_;
  SpPlan last_plan_;
  double last_busy_s_ = 0, last_idle_ = 0;  // the slowest rank's forward-backward, the idle share
};

}  // namespace lt
