// The trainer's side of adaptive sequence parallelism (data.packing:
// adaptive, parallel/adaptive/): a step's documents run whole, each on the
// Ulysses group its plan names, and the gradients are summed over every
// rank as in any other layout, so the step equals the same documents
// trained on one rank. Before the first step a short profile fits the
// planner's cost model to this machine; each step's documents are drawn and
// planned while the step before runs.
#include <algorithm>
#include <chrono>

#include "core/util/resources.h"
#include "train/trainer.h"
#include "core/util/error.h"
#include "core/util/files.h"
#include "offload/profiler/memory_tracker.h"
#include "parallel/adaptive/cost_calibration.h"
#include "parallel/sequence/sequence_shard.h"

namespace lt {
namespace {

SequenceLayout group_layout(int size) { return {size, 1, false, 1}; }

// Document `doc` as rank `rank` of a group of `size` holds it: padded so the
// group divides it, then this rank's contiguous part.
Batch group_part(const Batch& doc, int size, int rank) {
  if (size == 1) return doc;
  const Batch padded = pad_sequences(doc, group_layout(size));
  return shard_sequences(padded, sequence_columns(padded.tokens.size(1), group_layout(size), rank, 0));
}

std::vector<int64_t> lengths(const std::vector<Batch>& documents) {
  std::vector<int64_t> out;
  for (const auto& d : documents) out.push_back(d.tokens.size(1));
  return out;
}

std::string joined_groups(const SpPlan& plan) {
  std::string out;
  for (int g : plan.groups) {
    if (!out.empty()) out += '+';
    out += std::to_string(g);
  }
  return out;
}

}  // namespace

double Trainer::compute_gradients(const std::vector<Batch>& documents, const SpPlan& plan, int64_t step) {
  int64_t valid = 0;
  for (const auto& d : documents) valid += d.valid_tokens();
  const GroupAssignment mine = adaptive_->assignment(plan);
  ScopedLayers built(*rank_.model);  // the group's attention for this step only
  if (mine.size > 0) rank_.model->set_attention(mine.attention);
  std::vector<Batch> micros;
  for (int64_t d : mine.documents) micros.push_back(group_part(documents[d], mine.size, mine.rank).to(device_));
  const double loss = run_micro_batches(micros, static_cast<double>(std::max<int64_t>(1, valid)), step);
  // The phase the plan predicts: forward and backward until this rank's
  // last document is done (its gradients' reduction overlaps the end).
  auto busy = at::full({1}, pipeline_->total_seconds(), at::kDouble), longest = busy.clone();
  auto& world = mesh_.group(Group::world);
  world.all_reduce(busy);
  world.all_reduce(longest, ReduceOp::max);
  last_plan_ = plan;
  last_busy_s_ = longest.item<double>();
  // The share of rank time spent waiting for the slowest group.
  last_idle_ = 1 - busy.item<double>() / world.size() / std::max(1e-12, last_busy_s_);
  return loss;
}

// Forward and backward of one made-up document of `length` tokens on every
// block of `group` ranks (ranks outside a whole block wait): the slowest
// rank's seconds. The gradients are thrown away.
double Trainer::profile_document(int64_t length, int group, int64_t* activation_bytes) {
  auto& block = adaptive_->group(group);
  const bool runs = block.size() == group;
  const auto tokens = (at::arange(length + 1, at::kLong) * 7919 + 1).remainder(config_.model.vocab_size);
  Batch doc{tokens.narrow(0, 0, length).unsqueeze(0),
            tokens.narrow(0, 1, length).unsqueeze(0).clone(),
            at::arange(length, at::kLong).unsqueeze(0),
            at::Tensor(),
            at::Tensor(),
            nullptr};
  const Batch part = runs ? group_part(doc, group, block.rank()).to(device_) : Batch{};
  ScopedLayers built(*rank_.model);
  rank_.model->set_attention(adaptive_->attention(group));
  reset_device_peak(device_);
  const int64_t before = device_bytes(device_);
  synchronize(device_);  // a host clock times device work only once the device is idle at both ends
  const auto start = std::chrono::steady_clock::now();
  if (runs) stage_forward(part, at::Tensor()).backward();
  synchronize(device_);
  auto seconds =
      at::full({1}, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), at::kDouble);
  if (activation_bytes) *activation_bytes = device_peak_bytes(device_) - before;
  mesh_.group(Group::world).all_reduce(seconds, ReduceOp::max);
  state_.zero_grad();
  return seconds.item<double>();
}

void Trainer::calibrate_adaptive() {
  const auto start = std::chrono::steady_clock::now();
  SpCostModel memory;
  memory.max_group = adaptive_->max_group();
  memory.memory_limit = config_.parallel.adaptive.activation_gb * static_cast<double>(int64_t{1} << 30);
  // Activation bytes grow linearly with a rank's tokens (attention is
  // blockwise): a short document on one rank gives the rate, and warms up.
  const int64_t probe = std::max<int64_t>(16, config_.data.seq_len / 8);
  std::vector<CostSample> points;
  state_.with_step_weights([&] {
    int64_t bytes = 0;
    profile_document(probe, 1, &bytes);
    memory.bytes_per_token = static_cast<double>(bytes) / static_cast<double>(probe);
    points = calibration_points(config_.data.seq_len, memory);
    for (auto& p : points) p.seconds = profile_document(p.length, p.group);
  });
  adaptive_->set_cost_model(fit_cost_model(points, memory.bytes_per_token, memory.memory_limit));
  const SpCostModel& model = adaptive_->cost_model();
  char text[256];
  std::snprintf(text, sizeof(text),
                "adaptive sp: cost model from a %.1f s profile of %zu documents: %.3g s/token^2, %.3g s/token, "
                "all-to-all %.3g s/token, %.3g s latency; %.0f activation bytes/token; groups up to %d",
                std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), points.size(),
                model.attention_s, model.linear_s, model.exchange_s, model.latency_s, model.bytes_per_token,
                model.max_group);
  metrics_->line(text);
}

// This step's documents were drawn, and their plan started, during the step
// before: take the plan, draw and start planning the next step's, then run
// this one. `position` becomes the data position after this step.
StepResult Trainer::adaptive_step(Packer& packer, int64_t s, double lr, DataPosition& position) {
  const int64_t tokens = config_.train.global_batch_tokens;
  if (next_documents_.empty()) {
    next_documents_ = packer.documents(tokens, config_.data.seq_len_at(s));
    adaptive_->start_planning(lengths(next_documents_));
  }
  const std::vector<Batch> documents = std::move(next_documents_);
  next_documents_.clear();
  const SpPlan plan = adaptive_->finish_planning();
  position = packer.position();
  if (s + 1 < config_.train.steps) {
    next_documents_ = packer.documents(tokens, config_.data.seq_len_at(s + 1));
    adaptive_->start_planning(lengths(next_documents_));
  }
  const StepResult result = step(documents, plan, s + 1, lr);
  if (mesh_.rank() == 0) {
    const auto sizes = lengths(documents);
    nlohmann::ordered_json record = {{"step", s + 1},
                                     {"documents", documents.size()},
                                     {"longest", *std::max_element(sizes.begin(), sizes.end())},
                                     {"groups", plan.groups},
                                     {"method", plan.method},
                                     {"predicted_s", plan.predicted_s},
                                     {"measured_s", last_busy_s_},
                                     {"idle", last_idle_}};
    append_line(config_.run_dir + "/adaptive_sp.jsonl", record.dump());
  }
  return result;
}

// The last step's plan for the log line: groups, how they were chosen, the
// predicted against the measured forward-backward time, and the idle share.
std::string Trainer::describe_adaptive_step() const {
  char text[160];
  std::snprintf(text, sizeof(text), " | groups %s %s pred %.2fs meas %.2fs idle %.0f%%",
                joined_groups(last_plan_).c_str(), last_plan_.method.c_str(), last_plan_.predicted_s, last_busy_s_,
                100 * last_idle_);
  return text;
}

}  // namespace lt
