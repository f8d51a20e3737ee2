// Which run wrote a checkpoint, and which checkpoints a run may prune or
// resume: a run never deletes, overwrites or resumes another run's.
//
// A run gets a fresh id when it starts. Its lineage is the runs it descends
// from, each with the step it resumed at: a run started fresh is [A@0]; one
// resumed from A's step 100 is [A@0, B@100]. A checkpoint of run X at step s
// lies on lineage L when X is in L and s is not past the step at which L's
// next run left X (a branch resumed from step 100 does not own A's step 200).
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace lt {

class Lineage {
 public:
  struct Run {
    std::string id;
    int64_t from_step = 0;
  };

  // A run of its own: `id` started from scratch.
  static Lineage fresh(const std::string& id) { return Lineage({{id, 0}}); }
  // The lineage of a checkpoint's manifest; format-3 manifests, which
  // recorded none, read as one unnamed run.
  static Lineage of_manifest(const nlohmann::json& manifest);

  // This lineage continued by run `id` from its checkpoint at `step`.
  Lineage resumed(const std::string& id, int64_t step) const;

  const std::string& writer() const { return runs_.back().id; }
  // Whether the checkpoint `checkpoint` (of its writer, at `step`) lies on this lineage.
  bool holds(const Lineage& checkpoint, int64_t step) const;

  nlohmann::json to_json() const;

 private:
  explicit Lineage(std::vector<Run> runs) : runs_(std::move(runs)) {}
  std::vector<Run> runs_;
};

// 16 random hex digits.
std::string new_run_id();

}  // namespace lt
