#include "parallel/mesh/layout.h"

#include "core/util/error.h"

namespace lt {
namespace {

// Index of a rank within the dp x sp replicas (same tp and pp coordinate).
int replica_index(const Degrees& d, const Coord& c) { return c.ulysses + d.ulysses * (c.ring + d.ring * c.dp); }

// Two ranks are in the same group when they agree on every coordinate the
// group does not span.
bool same_group(Group kind, const Degrees& d, const Coord& a, const Coord& b) {
  const bool tp = a.tp == b.tp, u = a.ulysses == b.ulysses, r = a.ring == b.ring, dp = a.dp == b.dp, pp = a.pp == b.pp;
  switch (kind) {
    case Group::world:
      return true;
    case Group::tp:
      return u && r && dp && pp;
    case Group::ulysses:
      return tp && r && dp && pp;
    case Group::ring:
      return tp && u && dp && pp;
    case Group::sp:
      return tp && dp && pp;
    case Group::dp:
      return tp && u && r && pp;
    case Group::pp:
      return tp && u && r && dp;
    case Group::dp_sp:
      return tp && pp;
    case Group::ep:
      return tp && pp && replica_index(d, a) / d.ep == replica_index(d, b) / d.ep;
    case Group::ep_dp:
      return tp && pp && replica_index(d, a) % d.ep == replica_index(d, b) % d.ep;
    case Group::stage:
      return pp;
    case Group::model:
      return u && r && dp;
    case Group::tied: {
      auto end = [&](const Coord& c) { return c.pp == 0 || c.pp == d.pp - 1; };
      return tp && (pp || (end(a) && end(b)));
    }
  }
  return false;
}

std::string degrees_text(const ParallelConfig& p) {
  return "tp=" + std::to_string(p.tp) + " x sp.ulysses=" + std::to_string(p.sp.ulysses) +
         " x sp.ring=" + std::to_string(p.sp.ring) + " x pp=" + std::to_string(p.pp);
}

}  // namespace

const char* group_name(Group group) {
  switch (group) {
    case Group::world:
      return "world";
    case Group::tp:
      return "tp";
    case Group::ulysses:
      return "ulysses";
    case Group::ring:
      return "ring";
    case Group::sp:
      return "sp";
    case Group::dp:
      return "dp";
    case Group::pp:
      return "pp";
    case Group::dp_sp:
      return "dp_sp";
    case Group::ep:
      return "ep";
    case Group::ep_dp:
      return "ep_dp";
    case Group::stage:
      return "stage";
    case Group::model:
      return "model";
    case Group::tied:
      return "tied";
  }
  return "?";
}

Layout::Layout(Degrees degrees) : d_(degrees) {}

Coord Layout::coord(int rank) const {
  Coord c;
  c.tp = rank % d_.tp, rank /= d_.tp;
  c.ulysses = rank % d_.ulysses, rank /= d_.ulysses;
  c.ring = rank % d_.ring, rank /= d_.ring;
  c.dp = rank % d_.dp, rank /= d_.dp;
  c.pp = rank;
  return c;
}

int Layout::rank(const Coord& c) const {
  return c.tp + d_.tp * (c.ulysses + d_.ulysses * (c.ring + d_.ring * (c.dp + d_.dp * c.pp)));
}

std::vector<int> Layout::group(Group kind, int rank) const {
  const Coord mine = coord(rank);
  std::vector<int> ranks;
  for (int r = 0; r < world(); ++r)
    if (same_group(kind, d_, mine, coord(r))) ranks.push_back(r);
  return ranks;
}

int Layout::next(Group kind, int rank) const {
  const auto ranks = group(kind, rank);
  for (size_t i = 0; i < ranks.size(); ++i)
    if (ranks[i] == rank) return ranks[(i + 1) % ranks.size()];
  return rank;
}

int Layout::previous(Group kind, int rank) const {
  const auto ranks = group(kind, rank);
  for (size_t i = 0; i < ranks.size(); ++i)
    if (ranks[i] == rank) return ranks[(i + ranks.size() - 1) % ranks.size()];
  return rank;
}

Degrees resolve_degrees(const Config& config, int world) {
  const auto& p = config.parallel;
  const int64_t model = p.model_degree();
  if (world % model != 0)
    fail("parallel: " + std::to_string(world) + " ranks cannot be split into replicas of " + degrees_text(p) + " = " +
         std::to_string(model) + " ranks: run on a multiple of " + std::to_string(model) +
         " ranks or change the degrees");
  const int64_t dp = p.dp == "auto" ? world / model : std::stoll(p.dp);
  if (dp * model != world)
    fail("parallel: dp=" + std::to_string(dp) + " x " + degrees_text(p) + " = " + std::to_string(dp * model) +
         " ranks, but the world has " + std::to_string(world) + ": set parallel.dp=" + std::to_string(world / model) +
         " (or auto)");
  const int64_t replicas = dp * p.sp_degree();
  if (replicas % p.ep != 0)
    fail("parallel.ep=" + std::to_string(p.ep) + " does not divide the dp x sp = " + std::to_string(replicas) +
         " ranks it is carved from: choose a divisor of " + std::to_string(replicas));
  // Every dp rank takes an equal share of each step's sequences (adaptive
  // sequence parallelism deals out whole documents instead).
  std::vector<int64_t> lengths{config.data.seq_len};
  for (const auto& stage : config.data.curriculum) lengths.push_back(stage.seq_len);
  for (int64_t length : lengths) {
    if (config.data.packing == Packing::adaptive) break;
    const int64_t sequences = config.train.global_batch_tokens / length;
    if (sequences % dp != 0)
      fail("train.global_batch_tokens: a step of " + std::to_string(sequences) + " sequences of " +
           std::to_string(length) + " tokens does not split over dp=" + std::to_string(dp) +
           " ranks: make it a multiple of " + std::to_string(dp * length) + " tokens");
  }
  return {static_cast<int>(p.tp), static_cast<int>(p.sp.ulysses), static_cast<int>(p.sp.ring),
          static_cast<int>(dp),   static_cast<int>(p.pp),         static_cast<int>(p.ep)};
}

}  // namespace lt
