// memory.plan: auto. Before the first step, one micro-batch of random
// tokens is profiled through this rank's layers (offload/profiler), the
// planner chooses n_persist, n_buffer and each layer's mode under
// memory.device_budget_gb, and the choice is applied; a few steps later the
// prediction is set against what the steps measured.
#include <ATen/CPUGeneratorImpl.h>

#include "train/trainer.h"
#include "core/util/error.h"
#include "offload/activations/memory_policy.h"
#include "offload/profiler/profiler.h"

namespace lt {
namespace {

// Every rank of a pipeline stage must choose the same modes (a recomputed
// layer repeats its tp and sp collectives in backward), so they plan from
// the stage's mean profile.
void agree(Profile& p, Communicator& stage) {
  if (stage.size() == 1) return;
  std::vector<double> v = {static_cast<double>(p.base), static_cast<double>(p.head_peak), p.other_s};
  for (const auto& b : p.blocks)
    v.insert(v.end(),
             {b.forward_s, b.recompute_s, b.backward_s, static_cast<double>(b.input), static_cast<double>(b.output),
              static_cast<double>(b.kept), static_cast<double>(b.start), static_cast<double>(b.transient)});
  auto t = at::tensor(v, at::kDouble);
  stage.all_reduce(t, ReduceOp::avg);
  const double* x = t.data_ptr<double>();
  auto bytes = [&x] { return static_cast<int64_t>(std::llround(*x++)); };
  p.base = bytes(), p.head_peak = bytes(), p.other_s = *x++;
  for (auto& b : p.blocks) {
    b.forward_s = *x++, b.recompute_s = *x++, b.backward_s = *x++;
    b.input = bytes(), b.output = bytes(), b.kept = bytes(), b.start = bytes(), b.transient = bytes();
  }
}

}  // namespace

// One micro-batch shaped like the first step's, of random tokens from a
// generator of its own (the training stream is untouched).
Batch Trainer::probe_batch() {
  const int64_t micro = config_.train.micro_batch_size, seq = config_.data.seq_len_at(first_step_);
  const int64_t rows = micro * mesh_.group(Group::dp).size();
  at::Generator g = at::make_generator<at::CPUGeneratorImpl>(config_.train.seed + 1);
  Batch b;
  b.tokens = at::randint(config_.model.vocab_size, {rows, seq}, g, at::kLong);
  b.labels = b.tokens.clone();
  b.positions = at::arange(seq, at::kLong).expand({rows, seq}).contiguous();
  return local_batch(b).rows(0, micro).to(device_);
}

// Forward and backward of the probe through this stage; a stage after the
// first starts from random hidden states, one before the last backpropagates
// ones, so no pipeline traffic is needed.
void Trainer::probe_step(const Batch& probe) {
  const auto& shard = rank_.model->shard();
  at::Tensor hidden;
  if (!shard.first_stage) {
    const int64_t tokens = probe.tokens.size(1) / (shard.tp_sequence ? shard.tp_size : 1);
    at::Generator g = at::make_generator<at::CPUGeneratorImpl>(config_.train.seed + 2);
    hidden = at::randn({probe.size(), tokens, config_.model.hidden_size}, g).to(device_).requires_grad_();
  }
  auto out = stage_forward(probe, hidden);
  out.backward(at::ones_like(out));
}

void Trainer::plan_memory() {
  const Batch probe = probe_batch();
  Profile profile = profile_layers(*rank_.model, rank_.fetch, device_, [&] {
    // As a step runs it: the weights outside layers gathered (ZeRO-3), the
    // gradients reduced as layers finish, which frees their weights.
    state_.begin_step();
    state_.begin_backward(true);
    probe_step(probe);
    state_.end_backward();
    state_.finish_backward();
  });
  state_.zero_grad();
  agree(profile, mesh_.group(Group::stage));

  const int64_t rows = config_.sequences_per_step(first_step_) / mesh_.group(Group::dp).size();
  profile.micro_batches =
      static_cast<int>((rows + config_.train.micro_batch_size - 1) / config_.train.micro_batch_size);
  const int stages = mesh_.layout().degrees().pp;
  profile.in_flight = in_flight(mesh_.coord().pp, stages, profile.micro_batches, config_.all_forward_first());
  // Device state: the buckets' flat weights and gradients and the
  // optimizer's two moments of the segments they hand it.
  profile.state += state_.device_state_bytes();
  const auto device_elements = state_.device_segment_elements(), host_elements = state_.host_segment_elements();
  if (auto* chunks = state_.chunks()) {
    profile.chunks = chunks->chunk_bytes();
    for (const auto& b : profile.blocks) profile.chunk_of_block.push_back(chunks->chunk_of(b.layer));
  }
  const double device_rate = measure_adamw(device_);
  const double host_rate = device_.is_cuda() ? measure_adamw(at::Device(at::kCPU)) : device_rate;
  profile.optimizer_s = device_rate * static_cast<double>(device_elements);
  profile.host_optimizer_s = host_rate * static_cast<double>(host_elements);
  // On a CPU build the update would share backward's cores.
  profile.overlap_host_optimizer = device_.is_cuda() && config_.memory.overlap_update;
  profile.link_bytes_per_s = measure_link(device_, 64 << 20);
  profile.overlap_swaps = device_.is_cuda();
  profile.swap_frees_device = device_.is_cuda();

  const auto budget = static_cast<int64_t>(config_.memory.device_budget_gb * (int64_t{1} << 30));
  plan_ = choose_plan(profile, budget);
  if (state_.chunks()) state_.chunks()->configure(plan_->n_persist, plan_->n_buffer);
  apply_memory_policy(*rank_.model, config_.memory, rank_.fetch, &plan_->modes);
  metrics_->line("memory plan (auto, budget " + human_bytes(static_cast<double>(budget)) +
                 " per rank): " + describe(*plan_, static_cast<int64_t>(profile.chunks.size())));
}

void Trainer::report_plan(int64_t step, double step_seconds) {
  metrics_->line("memory plan check: step " + formatted("%.3g s", step_seconds) + " measured, " +
                 formatted("%.3g s", plan_->step_s) + " predicted; activations " +
                 human_bytes(static_cast<double>(last_activation_bytes_)) + " measured, " +
                 human_bytes(static_cast<double>(plan_->activations)) + " predicted");
  metrics_->record({{"step", step},
                    {"plan_step_s", plan_->step_s},
                    {"measured_step_s", step_seconds},
                    {"plan_activation_bytes", plan_->activations},
                    {"measured_activation_bytes", last_activation_bytes_}});
}

}  // namespace lt
