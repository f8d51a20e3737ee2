// The adaptive sequence-parallel planner on a simulated 64-GPU cluster:
// batches of 4M tokens of documents with a long-tailed length distribution
// (lognormal, 256 to 64K tokens), planned by the mixed-integer program
// against the best static layout (every group of one size, filled longest
// first), both predicted by the same cost model: a Llama-3-8B-shaped model
// on H100s (400 TFLOP/s reached, 25 GB/s per GPU for the all-to-alls,
// 5 ms of collective latency per document and step, 40K tokens of
// activations per GPU with every layer recomputed). These are the
// planner's predictions; the measured side awaits the runtime.
//
// usage: lt_bench_asp BATCHES TIME_LIMIT_S

#include <chrono>
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>
#include <random>

#include "parallel/adaptive/sp_planner.h"
#include "core/util/error.h"
#include "tests/bench/bench_support.h"

namespace lt {
namespace {

SpCostModel h100_llama8b() {
  const double flops = 400e12, layers = 32, hidden = 4096, parameters = 8e9;
  SpCostModel m;
  m.attention_s = 6 * hidden * layers / flops;      // causal: fwd + bwd over half the pairs, x2 FLOPs a MAC
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
    const SpPlan adaptive = plan_adaptive(lengths, 64, m, time_limit_s, 12);
    const double solve_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::map<int, int> sizes;
    for (int s : adaptive.groups) ++sizes[s];
    nlohmann::ordered_json groups;
    for (const auto& [size, count] : sizes) groups[std::to_string(size)] = count;
    std::printf("%s\n", nlohmann::ordered_json{{"bench", "simulate"}, {"ranks", 64}, {"documents", lengths.size()},
                                              {"tokens", tokens},
                                              {"longest", *std::max_element(lengths.begin(), lengths.end())},
                                              {"static_group", fixed.groups.front()},
                                              {"static_s", fixed.predicted_s}, {"adaptive_groups", groups},
                                              {"adaptive_s", adaptive.predicted_s}, {"method", adaptive.method},
                                              {"solve_s", solve_s}, {"speedup", fixed.predicted_s / adaptive.predicted_s}}
                            .dump()
                            .c_str());
  }
}

}  // namespace
}  // namespace lt

int main(int argc, char** argv) {
  return lt::bench::main(argc, argv, "lt_bench_asp", [&] {
    if (argc != 3) lt::fail("usage: lt_bench_asp BATCHES TIME_LIMIT_S");
    lt::simulate(std::atoi(argv[1]), std::atof(argv[2]));
  });
}
