// The runtime of adaptive sequence parallelism (data.packing: adaptive).
// The Ulysses groups of every size are split from the world once, as
// aligned blocks of ranks (a group of g is ranks [k g, (k + 1) g)), so a
// step only chooses among communicators that exist. Each step's plan is made
// on rank 0, in the background while the step before runs, and broadcast:
// every rank runs the same plan even when the solver's time limit cut it
// short at a different point than it would have on another rank.
#pragma once
#include <future>
#include <map>

#include "core/attention/attention.h"
#include "core/config/config.h"
#include "parallel/adaptive/sp_planner.h"
#include "parallel/mesh/mesh.h"

namespace lt {

// This rank's part of a plan. Groups take the ranks in plan order (largest
// first), so each starts at a multiple of its size: an aligned block.
struct GroupAssignment {
  int size = 0;                    // 0: this rank idles this step
  int rank = 0;                    // its place in the group
  AttentionFn attention;           // plain on one rank, Ulysses over the group otherwise
  std::vector<int64_t> documents;  // the group's, in the order it runs them
};

class AdaptiveSequenceParallel {
 public:
  // Collective over the world: the groups of every size up to max_group.
  AdaptiveSequenceParallel(Mesh& mesh, const AdaptiveSpConfig& config, int max_group);
  ~AdaptiveSequenceParallel();

  int max_group() const { return max_group_; }
  const SpCostModel& cost_model() const { return model_; }
  // The model the plans use, its groups capped at max_group().
  void set_cost_model(SpCostModel model) {
    model.max_group = max_group_;
    model_ = model;
  }
  // This rank's block of `size` ranks, and the attention over it.
  Communicator& group(int size) { return *groups_.at(size); }
  const AttentionFn& attention(int size) const { return attention_.at(size); }

  // The plan for documents of these lengths, by the configured planner.
  SpPlan plan(const std::vector<int64_t>& lengths) const;
  // Rank 0 starts planning in the background; the others note the count.
  void start_planning(std::vector<int64_t> lengths);
  // Collective over the world: the plan last started, as rank 0 made it.
  SpPlan finish_planning();

  GroupAssignment assignment(const SpPlan& plan) const;

 private:
  Mesh& mesh_;
  AdaptiveSpConfig config_;
  int max_group_;
  SpCostModel model_;
  std::map<int, Communicator*> groups_;
  std::map<int, AttentionFn> attention_;
  std::future<SpPlan> pending_;
  int64_t pending_documents_ = 0;
};

// The largest group worth forming: a power of two within the ranks and the
// heads (Ulysses gives each rank at least one), or the configured one.
int adaptive_max_group(const AdaptiveSpConfig& config, int ranks, int64_t heads);

}  // namespace lt
