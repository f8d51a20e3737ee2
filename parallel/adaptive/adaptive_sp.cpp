#include "parallel/adaptive/adaptive_sp.h"

#include <algorithm>

#include "core/util/error.h"
#include "parallel/sequence/ulysses_attention.h"

namespace lt {
namespace {

const std::vector<std::string> kMethods = {"milp", "milp-limit", "sweep", "greedy", "uniform"};

// A plan as doubles, for one broadcast: predicted time, method, group
// count, the groups, then each document's group.
std::vector<double> encode(const SpPlan& plan, int64_t documents) {
  std::vector<double> out = {
      plan.predicted_s,
      static_cast<double>(std::find(kMethods.begin(), kMethods.end(), plan.method) - kMethods.begin()),
      static_cast<double>(plan.groups.size())};
  for (int g : plan.groups) out.push_back(g);
  std::vector<double> group_of(documents, -1);
  for (size_t j = 0; j < plan.documents.size(); ++j)
    for (int64_t d : plan.documents[j]) group_of[d] = static_cast<double>(j);
  out.insert(out.end(), group_of.begin(), group_of.end());
  return out;
}

// Each group runs its documents in index order: the same on all of its
// ranks, whatever order the planner listed them in.
SpPlan decode(const double* data, int64_t documents) {
  SpPlan plan;
  plan.predicted_s = data[0];
  plan.method = kMethods.at(static_cast<size_t>(data[1]));
  const int groups = static_cast<int>(data[2]);
  for (int j = 0; j < groups; ++j) plan.groups.push_back(static_cast<int>(data[3 + j]));
  plan.documents.assign(groups, {});
  for (int64_t d = 0; d < documents; ++d) plan.documents.at(static_cast<size_t>(data[3 + groups + d])).push_back(d);
  return plan;
}

}  // namespace

int adaptive_max_group(const AdaptiveSpConfig& config, int ranks, int64_t heads) {
  if (config.max_group > 0) return static_cast<int>(std::min<int64_t>(config.max_group, ranks));
  int g = 1;
  while (2 * g <= ranks && 2 * g <= heads) g *= 2;
  return g;
}

AdaptiveSequenceParallel::AdaptiveSequenceParallel(Mesh& mesh, const AdaptiveSpConfig& config, int max_group)
    : mesh_(mesh), config_(config), max_group_(max_group) {
  model_.max_group = max_group;
  const int ranks = mesh.layout().world();
  for (int g = 1; g <= max_group; g *= 2) {
    // Ranks past the last whole block of g form a block that never runs.
    Communicator& comm = mesh.subgroup("adaptive_sp" + std::to_string(g), mesh.rank() / g);
    groups_[g] = &comm;
    attention_[g] = g == 1 ? AttentionFn(lt::attention) : ulysses_attention(comm);
  }
  LT_CHECK(config.group <= max_group, "parallel.adaptive.group=" + std::to_string(config.group) + " exceeds the " +
                                          std::to_string(max_group) + " ranks a group may span here (" +
                                          std::to_string(ranks) + " ranks)");
}

AdaptiveSequenceParallel::~AdaptiveSequenceParallel() {
  if (pending_.valid()) pending_.wait();
}

SpPlan AdaptiveSequenceParallel::plan(const std::vector<int64_t>& lengths) const {
  // Only blocks of max_group fill the ranks; a remainder never forms one.
  const int ranks = mesh_.layout().world() / max_group_ * max_group_;
  try {
    if (config_.group > 0) return plan_uniform(lengths, ranks, static_cast<int>(config_.group), model_);
    if (config_.planner == SpPlanner::uniform) return plan_greedy(lengths, ranks, model_);
    return plan_adaptive(lengths, ranks, model_, config_.time_limit_s, static_cast<int>(config_.buckets));
  } catch (const Error& e) {
    fail(std::string(e.what()) + " (parallel.adaptive.activation_gb=" + std::to_string(config_.activation_gb) +
         "): raise it, run on more ranks, or lower data.seq_len");
  }
}

void AdaptiveSequenceParallel::start_planning(std::vector<int64_t> lengths) {
  pending_documents_ = static_cast<int64_t>(lengths.size());
  if (mesh_.rank() != 0) return;
  pending_ = std::async(std::launch::async, [this, lengths = std::move(lengths)] { return plan(lengths); });
}

SpPlan AdaptiveSequenceParallel::finish_planning() {
  const int64_t documents = pending_documents_;
  const int64_t size = 3 + mesh_.layout().world() + documents;
  auto message = at::zeros({size}, at::kDouble);
  if (mesh_.rank() == 0) {
    const auto encoded = encode(pending_.get(), documents);  // a planning error surfaces here, on rank 0
    std::copy(encoded.begin(), encoded.end(), message.data_ptr<double>());
  }
  mesh_.group(Group::world).broadcast(message, 0);
  return decode(message.data_ptr<double>(), documents);
}

GroupAssignment AdaptiveSequenceParallel::assignment(const SpPlan& plan) const {
  GroupAssignment mine;
  int start = 0;
  for (size_t j = 0; j < plan.groups.size(); start += plan.groups[j++]) {
    const int g = plan.groups[j];
    if (mesh_.rank() < start || mesh_.rank() >= start + g) continue;
    LT_CHECK(start % g == 0 && groups_.count(g), "adaptive sequence parallelism: group " + std::to_string(j) + " of " +
                                                     std::to_string(g) + " ranks is not an aligned block up to " +
                                                     std::to_string(max_group_));
    mine.size = g;
    mine.rank = mesh_.rank() - start;
    mine.attention = attention_.at(g);
    mine.documents = plan.documents[j];
  }
  return mine;
}

}  // namespace lt
