#include "parallel/adaptive/sp_planner.h"

#include <glpk.h>

#include <algorithm>
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

// Places the documents of `order` (longest first), each on the group that
// finishes it earliest among those `allowed` for it; the plan's predicted
// time is its slowest group's load.
void place(SpPlan& plan, const std::vector<int64_t>& order, const std::vector<int64_t>& lengths,
           const SpCostModel& model, const std::function<bool(size_t group, int64_t doc)>& allowed,
           const std::function<void(size_t group, int64_t doc)>& placed = {}) {
  std::vector<double> load(plan.groups.size(), 0);
  for (int64_t d : order) {
    int best = -1;
    double best_end = 0;
    for (size_t j = 0; j < plan.groups.size(); ++j) {
      if (!allowed(j, d)) continue;
      const double end = load[j] + model.seconds(lengths[d], plan.groups[j]);
      if (best < 0 || end < best_end) best = static_cast<int>(j), best_end = end;
    }
    check(best >= 0, "adaptive sequence parallelism: no group may take document " + std::to_string(d));
    plan.documents[best].push_back(d);
    load[best] = best_end;
    if (placed) placed(best, d);
  }
  plan.predicted_s = load.empty() ? 0 : *std::max_element(load.begin(), load.end());
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
  std::vector<int64_t> longest;             // each bucket's longest document: its time and memory
  std::vector<std::vector<int64_t>> docs;   // its documents, longest first
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
  for (auto& b : docs)
    if (!b.empty()) out.longest.push_back(lengths[b.front()]), out.docs.push_back(std::move(b));
  return out;
}

// The program: group instances j (ranks / g of each size g), u_j whether
// it is formed, x_bj how many documents of bucket b it runs, T the step.
//   min T  s.t.  sum_j x_bj = n_b;  sum_j g_j u_j <= R;  x_bj <= n_b u_j;
//   sum_b t(b, g_j) x_bj <= T;  u of a size's instances in order (no
//   symmetric copies); x_bj exists only where bucket b fits size g_j.
class Program {
 public:
  Program(const Buckets& buckets, int ranks, const SpCostModel& model) : lp_(glp_create_prob()) {
    glp_set_obj_dir(lp_, GLP_MIN);
    const int t = add_column(GLP_CV, 1.0);
    glp_set_col_bnds(lp_, t, GLP_LO, 0, 0);
    for (int g : powers_of_two(ranks, model))
      for (int k = 0; k < ranks / g; ++k) groups_.push_back({g, add_column(GLP_BV, 0)});
    const int nb = static_cast<int>(buckets.longest.size());
    x_.assign(nb, std::vector<int>(groups_.size(), 0));
    for (int b = 0; b < nb; ++b)
      for (size_t j = 0; j < groups_.size(); ++j)
        if (model.fits(buckets.longest[b], groups_[j].size)) {
          x_[b][j] = add_column(GLP_IV, 0);
          glp_set_col_bnds(lp_, x_[b][j], GLP_DB, 0, static_cast<double>(buckets.docs[b].size()));
        }
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
        load.add(x_[b][j], model.seconds(buckets.longest[b], groups_[j].size));
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
  ~Program() { glp_delete_prob(lp_); }

  // Solves within the limit; false when no integer solution was found.
  bool solve(double time_limit_s, bool& optimal) {
    glp_iocp options;
    glp_init_iocp(&options);
    options.presolve = GLP_ON;
    options.msg_lev = GLP_MSG_OFF;
    options.tm_lim = std::max(1, static_cast<int>(time_limit_s * 1000));
    const int code = glp_intopt(lp_, &options);
    const int status = glp_mip_status(lp_);
    optimal = code == 0 && status == GLP_OPT;
    return status == GLP_OPT || status == GLP_FEAS;
  }

  // Documents per group and bucket in the solution.
  SpPlan plan(const Buckets& buckets, const std::vector<int64_t>& lengths, const SpCostModel& model) const {
    SpPlan plan;
    std::vector<std::vector<int64_t>> quota;  // per kept group, per bucket
    for (size_t j = 0; j < groups_.size(); ++j) {
      std::vector<int64_t> counts(buckets.docs.size(), 0);
      int64_t total = 0;
      for (size_t b = 0; b < buckets.docs.size(); ++b)
        if (x_[b][j]) total += counts[b] = std::llround(glp_mip_col_val(lp_, x_[b][j]));
      if (total == 0) continue;
      plan.groups.push_back(groups_[j].size);
      quota.push_back(counts);
    }
    plan.documents.assign(plan.groups.size(), {});
    std::vector<int64_t> order;
    std::vector<int> bucket_of(lengths.size(), 0);
    for (size_t b = 0; b < buckets.docs.size(); ++b)
      for (int64_t d : buckets.docs[b]) order.push_back(d), bucket_of[d] = static_cast<int>(b);
    std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return lengths[a] > lengths[b]; });
    place(
        plan, order, lengths, model, [&](size_t j, int64_t d) { return quota[j][bucket_of[d]] > 0; },
        [&](size_t j, int64_t d) { --quota[j][bucket_of[d]]; });
    return plan;
  }

 private:
  struct Row {
    std::vector<int> index{0};  // GLPK's arrays start at 1
    std::vector<double> value{0};
    void add(int column, double v) { index.push_back(column), value.push_back(v); }
  };
  struct Group {
    int size, used;
  };

  int add_column(int kind, double cost) {
    const int c = glp_add_cols(lp_, 1);
    glp_set_col_kind(lp_, c, kind);
    glp_set_obj_coef(lp_, c, cost);
    return c;
  }
  void add_row(const Row& row, int type, double low, double high) {
    const int r = glp_add_rows(lp_, 1);
    glp_set_row_bnds(lp_, r, type, low, high);
    glp_set_mat_row(lp_, r, static_cast<int>(row.index.size()) - 1, row.index.data(), row.value.data());
  }

  glp_prob* lp_;
  std::vector<Group> groups_;
  std::vector<std::vector<int>> x_;  // column of x_bj, 0 where bucket b does not fit group j
};

}  // namespace

SpPlan plan_uniform(const std::vector<int64_t>& lengths, int ranks, int group, const SpCostModel& model) {
  const int64_t longest = lengths.empty() ? 0 : *std::max_element(lengths.begin(), lengths.end());
  check(group >= 1 && group <= ranks, "adaptive sequence parallelism: groups of " + std::to_string(group) +
                                          " ranks do not fit the " + std::to_string(ranks) + " ranks");
  check(model.fits(longest, group), "adaptive sequence parallelism: a document of " + std::to_string(longest) +
                                        " tokens exceeds the activation memory of a group of " +
                                        std::to_string(group) + " ranks: use larger groups");
  SpPlan plan;
  plan.groups.assign(ranks / group, group);
  plan.documents.assign(plan.groups.size(), {});
  place(plan, longest_first(lengths), lengths, model, [](size_t, int64_t) { return true; });
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
  check(best.has_value(), "adaptive sequence parallelism: a document of " + std::to_string(longest) +
                              " tokens does not fit even on all " + std::to_string(ranks) + " ranks");
  best->method = "greedy";
  return *best;
}

SpPlan plan_adaptive(const std::vector<int64_t>& lengths, int ranks, const SpCostModel& model, double time_limit_s,
                     int buckets) {
  SpPlan greedy = plan_greedy(lengths, ranks, model);
  if (time_limit_s <= 0 || lengths.empty()) return greedy;
  const Buckets b = bucket(lengths, buckets);
  std::optional<SpPlan> solved;
  bool optimal = false;
  {
    Program program(b, ranks, model);
    if (program.solve(time_limit_s, optimal)) solved = program.plan(b, lengths, model);
  }
  // GLPK keeps an environment per thread, and the trainer plans on a new
  // thread every step: release it.
  glp_free_env();
  if (!solved || solved->predicted_s > greedy.predicted_s) return greedy;
  SpPlan plan = std::move(*solved);
  drop_idle(plan);
  plan.method = optimal ? "milp" : "milp-limit";
  return plan;
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
        return "document " + std::to_string(d) + " of " + std::to_string(lengths[d]) + " tokens exceeds the memory of a group of " +
               std::to_string(g);
    }
  }
  if (used > ranks) return std::to_string(used) + " ranks used of " + std::to_string(ranks);
  for (size_t d = 0; d < seen.size(); ++d)
    if (seen[d] != 1) return "document " + std::to_string(d) + " placed " + std::to_string(seen[d]) + " times";
  return "";
}

}  // namespace lt
