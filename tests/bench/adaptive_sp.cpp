// The adaptive sequence-parallel planner on a simulated 64-GPU cluster:
// batches of 4M tokens of documents with a long-tailed length distribution
// (lognormal, 256 to 64K tokens), planned by plan_adaptive (mixed-integer
// programs, GLPK) against the best static layout (every group of one size,
// filled longest first), both predicted by the same cost model: a
// Llama-3-8B-shaped model
// on H100s (400 TFLOP/s reached, 25 GB/s per GPU for the all-to-alls,
// 5 ms of collective latency per document and step, 40K tokens of
// activations per GPU with every layer recomputed). These are the
// planner's predictions.
//
// Then measured: training on the ranks of mpirun (8 CPU ranks in
// scripts/bench.sh) on documents of log-uniform length (256 to 8K tokens)
// under an activation limit that holds 2K tokens per rank, adaptive against
// each static layout that holds the longest document; tokens/s, and the
// planner's predicted step against the measured one (same calibrated model).
//
// usage: lt_bench_asp simulate BATCHES TIME_LIMIT_S
//        lt_bench_asp train STEPS milp|GROUP RUN_DIR

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>

#include "train/trainer.h"
#include "core/util/error.h"
#include "parallel/adaptive/sp_planner.h"
#include "tests/bench/bench_support.h"

namespace lt {
namespace {

SpCostModel h100_llama8b() {
  const double flops = 400e12, layers = 32, hidden = 4096, parameters = 8e9;
  SpCostModel m;
  m.attention_s = 6 * hidden * layers / flops;  // causal: fwd + bwd over half the pairs, x2 FLOPs a MAC
  m.linear_s = 6 * parameters / flops;
  m.exchange_s = 4 * hidden * 2 * 2 * layers / 25e9;  // q, k, v, out in bf16, forward and backward
  m.latency_s = 5e-3;
  m.bytes_per_token = 1;
  m.memory_limit = 40 * 1024;
  return m;
}

void simulate(int batches, double time_limit_s) {
  const SpCostModel m = h100_llama8b();
  std::mt19937_64 g(11);
  std::lognormal_distribution<double> length(8.0, 1.5);
  for (int b = 0; b < batches; ++b) {
    std::vector<int64_t> lengths;
    int64_t tokens = 0;
    while (tokens < (4 << 20)) {
      lengths.push_back(std::clamp<int64_t>(static_cast<int64_t>(length(g)), 256, 64 * 1024));
      tokens += lengths.back();
    }
    const SpPlan fixed = plan_greedy(lengths, 64, m);
    const auto start = std::chrono::steady_clock::now();
    const SpPlan adaptive = plan_adaptive(lengths, 64, m, time_limit_s, 32);
    const double solve_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::map<int, int> sizes;
    for (int s : adaptive.groups) ++sizes[s];
    nlohmann::ordered_json groups;
    for (const auto& [size, count] : sizes) groups[std::to_string(size)] = count;
    std::printf("%s\n", nlohmann::ordered_json{{"bench", "simulate"},
                                               {"ranks", 64},
                                               {"documents", lengths.size()},
                                               {"tokens", tokens},
                                               {"longest", *std::max_element(lengths.begin(), lengths.end())},
                                               {"static_group", fixed.groups.front()},
                                               {"static_s", fixed.predicted_s},
                                               {"adaptive_groups", groups},
                                               {"adaptive_s", adaptive.predicted_s},
                                               {"method", adaptive.method},
                                               {"solve_s", solve_s},
                                               {"speedup", fixed.predicted_s / adaptive.predicted_s},
                                               {"bound_speedup", fixed.predicted_s / step_lower_bound(lengths, 64, m)}}
                            .dump()
                            .c_str());
  }
}

Config training(int64_t steps, const std::string& layout, const std::string& run_dir) {
  Config c;
  c.run_dir = run_dir;
  c.model.vocab_size = 256, c.model.hidden_size = 128, c.model.intermediate_size = 384;
  c.model.num_layers = 4, c.model.num_heads = 8, c.model.num_kv_heads = 8, c.model.max_seq_len = 8192;
  c.model.init_std = 0.08;
  c.data.packing = Packing::adaptive;
  c.data.seq_len = 8192;
  c.data.passkey.min_doc_len = 256, c.data.passkey.max_doc_len = 8192;
  c.train.steps = steps;
  c.train.global_batch_tokens = 4 * 8192;
  c.train.schedule = Schedule::constant;
  c.train.lr = 1e-3;
  c.log.interval = 1;
  c.eval.at_end = false;
  c.checkpoint.interval = 1 << 30;
  auto& a = c.parallel.adaptive;
  if (layout != "milp") a.group = std::stoll(layout);
  a.time_limit_s = 2;
  a.buckets = 16;
  a.activation_gb = 2048 * 60e3 / (1 << 30);  // about 2K tokens of this model (60 KB each) per rank
  return c;
}

// Rank 0: the mean of each step after the first (which warms up).
void report_training(const Config& c, const std::string& layout, int ranks) {
  double tokens_per_s = 0, predicted = 0, measured = 0, idle = 0;
  int64_t n = 0;
  std::ifstream plans(c.run_dir + "/adaptive_sp.jsonl"), metrics(c.run_dir + "/metrics.jsonl");
  std::string plan_line, metric_line;
  nlohmann::json groups;
  while (std::getline(plans, plan_line) && std::getline(metrics, metric_line)) {
    const auto plan = nlohmann::json::parse(plan_line), metric = nlohmann::json::parse(metric_line);
    if (plan["step"] == 1) continue;
    tokens_per_s += metric["tokens_per_s"].get<double>(), predicted += plan["predicted_s"].get<double>();
    measured += plan["measured_s"].get<double>(), idle += plan["idle"].get<double>(), groups = plan["groups"], ++n;
  }
  LT_CHECK(n > 0, "lt_bench_asp: no step after the first was logged in " + c.run_dir);
  std::printf("%s\n", nlohmann::ordered_json{{"bench", "train"},
                                             {"ranks", ranks},
                                             {"layout", layout},
                                             {"steps", n},
                                             {"tokens_per_s", tokens_per_s / n},
                                             {"predicted_s", predicted / n},
                                             {"measured_s", measured / n},
                                             {"idle", idle / n},
                                             {"last_groups", groups}}
                          .dump()
                          .c_str());
}

void train(int64_t steps, const std::string& layout, const std::string& run_dir) {
  const Config c = training(steps, layout, run_dir + "/" + layout);
  MPI_Comm world;
  MPI_Comm_dup(MPI_COMM_WORLD, &world);
  int ranks = 1, rank = 0;
  MPI_Comm_size(world, &ranks);
  MPI_Comm_rank(world, &rank);
  if (rank == 0) std::filesystem::remove_all(c.run_dir), std::filesystem::create_directories(c.run_dir);
  MPI_Barrier(world);
  {
    Mesh mesh(Layout(resolve_degrees(c, ranks)), world, 600);
    Trainer(c, &mesh).run();
  }
  if (rank == 0) report_training(c, layout, ranks);
}

}  // namespace
}  // namespace lt

int main(int argc, char** argv) {
  return lt::bench::main(argc, argv, "lt_bench_asp", [&] {
    const std::string mode = argc > 1 ? argv[1] : "";
    if (mode == "simulate" && argc == 4) return lt::simulate(std::atoi(argv[2]), std::atof(argv[3]));
    if (mode == "train" && argc == 5) return lt::train(std::atoll(argv[2]), argv[3], argv[4]);
    lt::fail("usage: lt_bench_asp simulate BATCHES TIME_LIMIT_S | train STEPS milp|GROUP RUN_DIR");
  });
}
