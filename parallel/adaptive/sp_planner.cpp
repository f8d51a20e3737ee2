#include "parallel/adaptive/sp_planner.h"

#include <glpk.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <functional>
#include <numeric>
#include <optional>

#include "core/util/error.h"

namespace lt {

double SpCostModel::seconds(int64_t length, int group) const {
  const double l = static_cast<double>(length), g = group;
  return attention_s * l * l / g + linear_s * l / g + exchange_s * (l / g) * (g - 1) / g + (group > 1 ? latency_s : 0);
}

bool SpCostModel::fits(int64_t length, int group) const {
  if (max_group > 0 && group > max_group) return false;
  return memory_limit <= 0 || bytes_per_token * std::ceil(static_cast<double>(length) / group) <= memory_limit;
}

namespace {

// Up to this many ranks the exact program over group instances is tried.
constexpr int kExactRanks = 16;
// Step times the aggregated program is solved for.
constexpr int kSweep = 24;

// The group sizes that may form.
std::vector<int> powers_of_two(int ranks, const SpCostModel& model) {
  std::vector<int> sizes;
  for (int g = 1; g <= ranks && (model.max_group <= 0 || g <= model.max_group); g *= 2) sizes.push_back(g);
  return sizes;
}

std::vector<int64_t> longest_first(const std::vector<int64_t>& lengths) {
  std::vector<int64_t> order(lengths.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return lengths[a] > lengths[b]; });
  return order;
}

// A plan on `groups`: the documents longest first, each on the group that
// finishes it earliest among those `allowed` for it; its predicted time is
// the slowest group's load.
SpPlan place(std::vector<int> groups, const std::vector<int64_t>& lengths, const SpCostModel& model,
             const std::function<bool(size_t group, int64_t doc)>& allowed) {
  SpPlan plan;
  plan.groups = std::move(groups);
  plan.documents.assign(plan.groups.size(), {});
  std::vector<double> load(plan.groups.size(), 0);
  for (int64_t d : longest_first(lengths)) {
    int best = -1;
    double best_end = 0;
    for (size_t j = 0; j < plan.groups.size(); ++j) {
      if (!allowed(j, d)) continue;
      const double end = load[j] + model.seconds(lengths[d], plan.groups[j]);
      if (best < 0 || end < best_end) best = static_cast<int>(j), best_end = end;
    }
    LT_CHECK(best >= 0, "adaptive sequence parallelism: no group may take document " + std::to_string(d));
    plan.documents[best].push_back(d);
    load[best] = best_end;
  }
  plan.predicted_s = load.empty() ? 0 : *std::max_element(load.begin(), load.end());
  return plan;
}

// Local search after placement: while some document of the slowest group
// finishes earlier on another group that can hold it (without that group
// becoming the slowest), move the one that lowers the pair's maximum most.
void improve(SpPlan& plan, const std::vector<int64_t>& lengths, const SpCostModel& model) {
  const size_t n = plan.groups.size();
  std::vector<double> load(n, 0);
  for (size_t j = 0; j < n; ++j)
    for (int64_t d : plan.documents[j]) load[j] += model.seconds(lengths[d], plan.groups[j]);
  for (int round = 0; round < 10000 && n > 1; ++round) {
    const size_t slow = std::max_element(load.begin(), load.end()) - load.begin();
    double best = load[slow];
    size_t best_doc = 0, best_to = n;
    for (size_t i = 0; i < plan.documents[slow].size(); ++i) {
      const int64_t d = plan.documents[slow][i];
      const double after = load[slow] - model.seconds(lengths[d], plan.groups[slow]);
      for (size_t k = 0; k < n; ++k) {
        if (k == slow || !model.fits(lengths[d], plan.groups[k])) continue;
        const double worst = std::max(after, load[k] + model.seconds(lengths[d], plan.groups[k]));
        if (worst < best * (1 - 1e-9)) best = worst, best_doc = i, best_to = k;
      }
    }
    if (best_to == n) break;
    const int64_t d = plan.documents[slow][best_doc];
    plan.documents[slow].erase(plan.documents[slow].begin() + static_cast<int64_t>(best_doc));
    plan.documents[best_to].push_back(d);
    load[slow] -= model.seconds(lengths[d], plan.groups[slow]);
    load[best_to] += model.seconds(lengths[d], plan.groups[best_to]);
  }
  plan.predicted_s = n == 0 ? 0 : *std::max_element(load.begin(), load.end());
}

// Drops the groups that run nothing (their ranks idle) and orders the rest
// largest first.
void drop_idle(SpPlan& plan) {
  std::vector<std::pair<int, std::vector<int64_t>>> kept;
  for (size_t j = 0; j < plan.groups.size(); ++j)
    if (!plan.documents[j].empty()) kept.emplace_back(plan.groups[j], plan.documents[j]);
  std::stable_sort(kept.begin(), kept.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  plan.groups.clear(), plan.documents.clear();
  for (auto& [g, docs] : kept) plan.groups.push_back(g), plan.documents.push_back(std::move(docs));
}

struct Buckets {
  std::vector<std::vector<int64_t>> docs;     // each bucket's documents, longest first
  std::vector<std::vector<int64_t>> lengths;  // and their lengths

  size_t size() const { return docs.size(); }
  // Its longest document: the bucket's memory, its time alone.
  int64_t longest(size_t b) const { return lengths[b].front(); }

  // A document's mean time: the programs count documents, and the mean
  // makes a bucket's total time exact (its longest would overstate it by up
  // to the square of the bucket's width).
  double seconds(size_t b, int group, const SpCostModel& model) const {
    double total = 0;
    for (int64_t l : lengths[b]) total += model.seconds(l, group);
    return total / static_cast<double>(lengths[b].size());
  }
};

// Log-spaced length buckets; empty ones dropped.
Buckets bucket(const std::vector<int64_t>& lengths, int count) {
  const auto [low, high] = std::minmax_element(lengths.begin(), lengths.end());
  const double span = std::log(static_cast<double>(*high) / static_cast<double>(*low)) + 1e-9;
  std::vector<std::vector<int64_t>> docs(count);
  for (int64_t d : longest_first(lengths)) {
    const double at = std::log(static_cast<double>(lengths[d]) / static_cast<double>(*low)) / span;
    docs[std::min<int>(count - 1, static_cast<int>(at * count))].push_back(d);
  }
  Buckets out;
  for (auto& b : docs) {
    if (b.empty()) continue;
    out.lengths.emplace_back();
    for (int64_t d : b) out.lengths.back().push_back(lengths[d]);
    out.docs.push_back(std::move(b));
  }
  return out;
}

// A GLPK problem being built: columns, rows, and a time-limited solve.
class GlpkProgram {
 public:
  GlpkProgram() : lp_(glp_create_prob()) { glp_set_obj_dir(lp_, GLP_MIN); }
  ~GlpkProgram() { glp_delete_prob(lp_); }
  GlpkProgram(const GlpkProgram&) = delete;
  GlpkProgram& operator=(const GlpkProgram&) = delete;

  enum class Outcome { optimal, feasible, infeasible, out_of_time };

  Outcome solve(double time_limit_s) {
    glp_iocp options;
    glp_init_iocp(&options);
    options.presolve = GLP_ON;
    options.msg_lev = GLP_MSG_OFF;
    options.tm_lim = std::max(1, static_cast<int>(time_limit_s * 1000));
    const int code = glp_intopt(lp_, &options);
    const int status = glp_mip_status(lp_);
    if (code == 0 && status == GLP_OPT) return Outcome::optimal;
    if (status == GLP_OPT || status == GLP_FEAS) return Outcome::feasible;
    if (code == GLP_ENOPFS || status == GLP_NOFEAS) return Outcome::infeasible;
    return Outcome::out_of_time;
  }

 protected:
  struct Row {
    std::vector<int> index{0};  // GLPK's arrays start at 1
    std::vector<double> value{0};
    void add(int column, double v) { index.push_back(column), value.push_back(v); }
  };

  int add_column(int kind, double cost, double low, double high) {
    const int c = glp_add_cols(lp_, 1);
    glp_set_col_kind(lp_, c, kind);
    glp_set_obj_coef(lp_, c, cost);
    if (kind != GLP_BV) glp_set_col_bnds(lp_, c, high < 0 ? GLP_LO : GLP_DB, low, std::max(low, high));
    return c;
  }
  void add_row(const Row& row, int type, double low, double high) {
    const int r = glp_add_rows(lp_, 1);
    glp_set_row_bnds(lp_, r, type, low, high);
    glp_set_mat_row(lp_, r, static_cast<int>(row.index.size()) - 1, row.index.data(), row.value.data());
  }
  int64_t value(int column) const { return std::llround(glp_mip_col_val(lp_, column)); }

 private:
  glp_prob* lp_;
};

// A program's solution as a plan: `quota[c][b]` documents of bucket b go
// to class c (a group, or every group of one size), groups[j] of class
// class_of[j], classes largest first. In each bucket the longest documents
// go to the largest class (they gain most from more ranks); then within
// each class, longest first to the group that finishes earliest.
SpPlan place_by_quota(std::vector<int> groups, const std::vector<std::vector<int64_t>>& quota,
                      const std::vector<int>& class_of, const Buckets& buckets, const std::vector<int64_t>& lengths,
                      const SpCostModel& model) {
  std::vector<int> class_of_doc(lengths.size(), -1);
  for (size_t b = 0; b < buckets.size(); ++b) {
    size_t next = 0;
    for (size_t c = 0; c < quota.size(); ++c)
      for (int64_t k = 0; k < quota[c][b] && next < buckets.docs[b].size(); ++k)
        class_of_doc[buckets.docs[b][next++]] = static_cast<int>(c);
  }
  return place(std::move(groups), lengths, model, [&](size_t j, int64_t d) { return class_of[j] == class_of_doc[d]; });
}

// The documents longest first, each on the group that finishes it earliest
// among those that can hold it: the groups' sizes chosen, not the quotas.
SpPlan place_on_groups(const std::vector<int>& groups, const std::vector<int64_t>& lengths, const SpCostModel& model) {
  return place(groups, lengths, model, [&](size_t j, int64_t d) { return model.fits(lengths[d], groups[j]); });
}

// The exact program: group instances j (ranks / g of each size g), u_j
// whether it is formed, x_bj how many documents of bucket b it runs, T the
// step.
//   min T  s.t.  sum_j x_bj = n_b;  sum_j g_j u_j <= R;  x_bj <= n_b u_j;
//   sum_b t(b, g_j) x_bj <= T;  u of a size's instances in order (no
//   symmetric copies); x_bj exists only where bucket b fits size g_j.
// t(b, g) is the mean time of bucket b's documents on g ranks. Its
// instances grow as R log R: for small jobs.
class InstanceProgram : public GlpkProgram {
 public:
  InstanceProgram(const Buckets& buckets, int ranks, const SpCostModel& model) {
    const int t = add_column(GLP_CV, 1.0, 0, -1);
    for (int g : powers_of_two(ranks, model))
      for (int k = 0; k < ranks / g; ++k) groups_.push_back({g, add_column(GLP_BV, 0, 0, 1)});
    const int nb = static_cast<int>(buckets.size());
    x_.assign(nb, std::vector<int>(groups_.size(), 0));
    for (int b = 0; b < nb; ++b)
      for (size_t j = 0; j < groups_.size(); ++j)
        if (model.fits(buckets.longest(b), groups_[j].size))
          x_[b][j] = add_column(GLP_IV, 0, 0, static_cast<double>(buckets.docs[b].size()));
    for (int b = 0; b < nb; ++b) {  // every document placed
      Row row;
      for (size_t j = 0; j < groups_.size(); ++j)
        if (x_[b][j]) row.add(x_[b][j], 1);
      const double n = static_cast<double>(buckets.docs[b].size());
      add_row(row, GLP_FX, n, n);
    }
    Row ranks_row;  // within the ranks
    for (const auto& group : groups_) ranks_row.add(group.used, group.size);
    add_row(ranks_row, GLP_UP, 0, ranks);
    for (size_t j = 0; j < groups_.size(); ++j) {
      Row load;  // each group within T; only formed groups run anything
      for (int b = 0; b < nb; ++b) {
        if (!x_[b][j]) continue;
        load.add(x_[b][j], buckets.seconds(b, groups_[j].size, model));
        Row only_if_used;
        only_if_used.add(x_[b][j], 1);
        only_if_used.add(groups_[j].used, -static_cast<double>(buckets.docs[b].size()));
        add_row(only_if_used, GLP_UP, 0, 0);
      }
      load.add(t, -1);
      add_row(load, GLP_UP, 0, 0);
      if (j + 1 < groups_.size() && groups_[j + 1].size == groups_[j].size) {
        Row order;
        order.add(groups_[j].used, 1);
        order.add(groups_[j + 1].used, -1);
        add_row(order, GLP_LO, 0, 0);
      }
    }
  }

  SpPlan plan(const Buckets& buckets, const std::vector<int64_t>& lengths, const SpCostModel& model) const {
    std::vector<int> groups, class_of;
    std::vector<std::vector<int64_t>> quota;  // per formed group (largest first), per bucket
    for (size_t j = groups_.size(); j-- > 0;) {
      std::vector<int64_t> counts(buckets.size(), 0);
      int64_t total = 0;
      for (size_t b = 0; b < buckets.size(); ++b)
        if (x_[b][j]) total += counts[b] = value(x_[b][j]);
      if (total == 0) continue;
      class_of.push_back(static_cast<int>(groups.size()));
      groups.push_back(groups_[j].size);
      quota.push_back(counts);
    }
    return place_by_quota(groups, quota, class_of, buckets, lengths, model);
  }

 private:
  struct Group {
    int size, used;
  };
  std::vector<Group> groups_;
  std::vector<std::vector<int>> x_;  // column of x_bj, 0 where bucket b does not fit group j
};

// FlexSP's aggregated program, for a given step time T: n_g groups of each
// size g, x_bg documents of bucket b on groups of size g (only where one of
// them alone finishes within T and fits), the work on each size within
// what its groups do in T, fewest rank-seconds:
//   min sum_bg g t(b, g) x_bg  s.t.  sum_g x_bg = n_b;  sum_g g n_g <= R;
//   sum_b t(b, g) x_bg <= T n_g;  documents over T / 2 at most n_g.
// Its size is buckets x log R whatever R; it is solved for a sweep of T.
class SizeProgram : public GlpkProgram {
 public:
  SizeProgram(const Buckets& buckets, int ranks, const SpCostModel& model, double step_s) : ranks_(ranks) {
    sizes_ = powers_of_two(ranks, model);
    const int nb = static_cast<int>(buckets.size());
    x_.assign(nb, std::vector<int>(sizes_.size(), 0));
    for (int g : sizes_) count_.push_back(add_column(GLP_IV, 0, 0, ranks / g));
    for (int b = 0; b < nb; ++b)
      for (size_t k = 0; k < sizes_.size(); ++k) {
        const int g = sizes_[k];
        if (!model.fits(buckets.longest(b), g) || model.seconds(buckets.longest(b), g) > step_s) continue;
        const double documents = static_cast<double>(buckets.docs[b].size());
        x_[b][k] = add_column(GLP_IV, buckets.seconds(b, g, model) * g, 0, documents);
      }
    for (int b = 0; b < nb; ++b) {
      Row row;
      for (size_t k = 0; k < sizes_.size(); ++k)
        if (x_[b][k]) row.add(x_[b][k], 1);
      const double n = static_cast<double>(buckets.docs[b].size());
      add_row(row, GLP_FX, n, n);
    }
    Row ranks_row;
    for (size_t k = 0; k < sizes_.size(); ++k) ranks_row.add(count_[k], sizes_[k]);
    add_row(ranks_row, GLP_UP, 0, ranks);
    for (size_t k = 0; k < sizes_.size(); ++k) {
      Row load, halves;
      for (int b = 0; b < nb; ++b) {
        if (!x_[b][k]) continue;
        load.add(x_[b][k], buckets.seconds(b, sizes_[k], model));
        // Two documents over T / 2 never share a group.
        if (model.seconds(buckets.lengths[b].back(), sizes_[k]) > step_s / 2) halves.add(x_[b][k], 1);
      }
      load.add(count_[k], -step_s);
      add_row(load, GLP_UP, 0, 0);
      halves.add(count_[k], -1);
      add_row(halves, GLP_UP, 0, 0);
    }
  }

  SpPlan plan(const Buckets& buckets, const std::vector<int64_t>& lengths, const SpCostModel& model) const {
    std::vector<int> groups, class_of;
    std::vector<std::vector<int64_t>> quota;  // per size (largest first), per bucket
    for (size_t k = sizes_.size(); k-- > 0;) {
      for (int64_t i = 0; i < value(count_[k]); ++i)
        groups.push_back(sizes_[k]), class_of.push_back(static_cast<int>(quota.size()));
      quota.emplace_back(buckets.size(), 0);
      for (size_t b = 0; b < buckets.size(); ++b)
        if (x_[b][k]) quota.back()[b] = value(x_[b][k]);
    }
    SpPlan by_quota = place_by_quota(groups, quota, class_of, buckets, lengths, model);
    // Or only the sizes, with the ranks the program left idle as groups too.
    int idle = ranks_;
    for (int g : groups) idle -= g;
    for (size_t k = sizes_.size(); k-- > 0;)
      for (; idle >= sizes_[k]; idle -= sizes_[k]) groups.push_back(sizes_[k]);
    std::sort(groups.begin(), groups.end(), std::greater<>());
    SpPlan by_time = place_on_groups(groups, lengths, model);
    return by_time.predicted_s < by_quota.predicted_s ? by_time : by_quota;
  }

 private:
  int ranks_;
  std::vector<int> sizes_, count_;
  std::vector<std::vector<int>> x_;  // column of x_bg, 0 where absent
};

}  // namespace

double step_lower_bound(const std::vector<int64_t>& lengths, int ranks, const SpCostModel& model) {
  double longest = 0, area = 0;
  for (int64_t l : lengths) {
    double best_time = 1e300, best_area = 1e300;
    for (int g : powers_of_two(ranks, model))
      if (model.fits(l, g))
        best_time = std::min(best_time, model.seconds(l, g)), best_area = std::min(best_area, g * model.seconds(l, g));
    longest = std::max(longest, best_time), area += best_area;
  }
  return std::max(longest, area / ranks);
}

SpPlan plan_uniform(const std::vector<int64_t>& lengths, int ranks, int group, const SpCostModel& model) {
  const int64_t longest = lengths.empty() ? 0 : *std::max_element(lengths.begin(), lengths.end());
  LT_CHECK(group >= 1 && group <= ranks, "adaptive sequence parallelism: groups of " + std::to_string(group) +
                                             " ranks do not fit the " + std::to_string(ranks) + " ranks");
  LT_CHECK(model.fits(longest, group), "adaptive sequence parallelism: a document of " + std::to_string(longest) +
                                           " tokens exceeds the activation memory of a group of " +
                                           std::to_string(group) + " ranks: use larger groups");
  SpPlan plan = place_on_groups(std::vector<int>(ranks / group, group), lengths, model);
  drop_idle(plan);
  plan.method = "uniform";
  return plan;
}

SpPlan plan_greedy(const std::vector<int64_t>& lengths, int ranks, const SpCostModel& model) {
  const int64_t longest = lengths.empty() ? 0 : *std::max_element(lengths.begin(), lengths.end());
  std::optional<SpPlan> best;
  for (int g : powers_of_two(ranks, model)) {
    if (!model.fits(longest, g)) continue;
    SpPlan plan = plan_uniform(lengths, ranks, g, model);
    if (!best || plan.predicted_s < best->predicted_s) best = std::move(plan);
  }
  LT_CHECK(best.has_value(), "adaptive sequence parallelism: a document of " + std::to_string(longest) +
                                 " tokens exceeds the activation memory of every group up to " +
                                 std::to_string(std::min(ranks, model.max_group > 0 ? model.max_group : ranks)) +
                                 " ranks");
  best->method = "greedy";
  return *best;
}

SpPlan plan_adaptive(const std::vector<int64_t>& lengths, int ranks, const SpCostModel& model, double time_limit_s,
                     int buckets) {
  SpPlan best = plan_greedy(lengths, ranks, model);
  if (time_limit_s <= 0 || lengths.empty()) return best;
  using clock = std::chrono::steady_clock;
  const auto deadline = clock::now() + std::chrono::duration<double>(time_limit_s);
  auto left = [&] { return std::chrono::duration<double>(deadline - clock::now()).count(); };
  auto consider = [&](SpPlan plan, const char* method) {
    improve(plan, lengths, model);
    drop_idle(plan);
    if (plan.predicted_s < best.predicted_s * (1 - 1e-9)) best = std::move(plan), best.method = method;
  };
  const Buckets b = bucket(lengths, buckets);
  // Small jobs: the exact program, with up to half the time.
  if (ranks <= kExactRanks) {
    InstanceProgram program(b, ranks, model);
    const auto outcome = program.solve(left() / 2);
    if (outcome == GlpkProgram::Outcome::optimal || outcome == GlpkProgram::Outcome::feasible)
      consider(program.plan(b, lengths, model), outcome == GlpkProgram::Outcome::optimal ? "milp" : "milp-limit");
  }
  // Any job: the aggregated program at step times from the lower bound to
  // the best plan so far. Its pooled loads make it optimistic, and how well
  // whole documents then pack is not monotone in T: every solution is a
  // candidate, and the sweep narrows to what beats the best.
  const double low = step_lower_bound(lengths, ranks, model);
  for (int i = 0; i < kSweep && left() > 0; ++i) {
    const double step = low + (best.predicted_s - low) * i / kSweep;
    SizeProgram program(b, ranks, model, step);
    const auto outcome = program.solve(left());
    if (outcome == GlpkProgram::Outcome::out_of_time) break;
    if (outcome != GlpkProgram::Outcome::infeasible) consider(program.plan(b, lengths, model), "sweep");
  }
  // GLPK keeps an environment per thread, and the trainer plans on a new
  // thread every step: release it.
  glp_free_env();
  return best;
}

std::string check_plan(const SpPlan& plan, const std::vector<int64_t>& lengths, int ranks, const SpCostModel& model) {
  if (plan.groups.size() != plan.documents.size()) return "groups and their documents differ in number";
  int used = 0;
  std::vector<int> seen(lengths.size(), 0);
  for (size_t j = 0; j < plan.groups.size(); ++j) {
    const int g = plan.groups[j];
    if (g < 1 || (g & (g - 1)) != 0) return "group size " + std::to_string(g) + " is not a power of two";
    used += g;
    for (int64_t d : plan.documents[j]) {
      if (d < 0 || d >= static_cast<int64_t>(lengths.size())) return "document " + std::to_string(d) + " unknown";
      ++seen[d];
      if (!model.fits(lengths[d], g))
        return "document " + std::to_string(d) + " of " + std::to_string(lengths[d]) +
               " tokens exceeds the memory of a group of " + std::to_string(g);
    }
  }
  if (used > ranks) return std::to_string(used) + " ranks used of " + std::to_string(ranks);
  for (size_t d = 0; d < seen.size(); ++d)
    if (seen[d] != 1) return "document " + std::to_string(d) + " placed " + std::to_string(seen[d]) + " times";
  return "";
}

}  // namespace lt
