// The 4D rank grid as plain arithmetic, with no MPI: which coordinate a rank
// holds and which ranks form each group. Rank order (docs/design.md): tp
// innermost, then Ulysses, ring, dp, pp outermost, so a rank is
//   tp + T * (ulysses + U * (ring + R * (dp + D * pp))).
// `longtrain plan` prints it and the Mesh splits MPI communicators from it.
#pragma once
#include <string>
#include <vector>

#include "core/config/config.h"

namespace lt {

struct Degrees {
  int tp = 1, ulysses = 1, ring = 1, dp = 1, pp = 1, ep = 1;
  int world() const { return tp * ulysses * ring * dp * pp; }
};

struct Coord {
  int tp = 0, ulysses = 0, ring = 0, dp = 0, pp = 0;
};

enum class Group {
  world,
  tp,
  ulysses,
  ring,
  sp,  // ulysses x ring: the ranks sharing one sequence
  dp,
  pp,
  dp_sp,  // every replica of a replicated weight: its gradients are reduced here
  ep,     // expert parallelism: `ep` consecutive ranks of dp_sp
  ep_dp,  // ranks of dp_sp holding the same experts
  stage,  // tp x dp_sp: every rank of one pipeline stage
  model,  // tp x pp: the ranks that together hold one copy of the model
  tied,   // dp_sp of the first and last stage (tied embeddings); dp_sp elsewhere
};
inline constexpr Group kAllGroups[] = {Group::world, Group::tp,    Group::ulysses, Group::ring, Group::sp,
                                       Group::dp,    Group::pp,    Group::dp_sp,   Group::ep,   Group::ep_dp,
                                       Group::stage, Group::model, Group::tied};
const char* group_name(Group group);

class Layout {
 public:
  explicit Layout(Degrees degrees);

  const Degrees& degrees() const { return d_; }
  int world() const { return d_.world(); }
  Coord coord(int rank) const;
  int rank(const Coord& c) const;

  // The ranks of `rank`'s group, ascending; position in it = rank in the group.
  std::vector<int> group(Group kind, int rank) const;
  // The neighbours of `rank` in a ring (ring attention) or the pipeline.
  int next(Group kind, int rank) const;
  int previous(Group kind, int rank) const;

 private:
  Degrees d_;
};

// Degrees from the recipe for `world` ranks (dp: auto fills the world), with
// every rule that needs the world size checked: throws lt::Error saying which
// numbers disagree and what would work.
Degrees resolve_degrees(const Config& config, int world);

}  // namespace lt
