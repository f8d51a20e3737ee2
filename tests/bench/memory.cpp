// Activation memory in one process: the longest sequence (doubling from 512)
// whose training step (forward and backward) takes at most CAP MiB of working
// memory (peak resident minus resident before the step), with no memory
// feature against every one; then at a length where all fit, the step time
// of each feature against none. A 4-layer Llama with hidden 256 and a 32K
// vocabulary (the logits weigh most, as in real models at long context).
// Prints one JSON object per measurement; scripts/bench.sh runs it.
//
// usage: lt_bench_mem longest CAP_MIB | cost SEQ [STEPS]
#include <ATen/Parallel.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>

#include "core/train/trainer.h"
#include "core/util/error.h"
#include "core/util/resources.h"
#include "parallel/mesh/mesh.h"

namespace lt {
namespace {

struct Feature {
  const char* name;
  MemoryConfig memory;
};

const std::vector<Feature>& features() {
  static const std::vector<Feature> all = {
      {"none", {}},
      {"checkpoint full", {"full", 1, "1", "1"}},
      {"tiled mlp (auto)", {"none", 1, "auto", "1"}},
      {"tiled loss (auto)", {"none", 1, "1", "auto"}},
      {"all", {"full", 1, "auto", "auto"}},
  };
  return all;
}

Config bench_config(int64_t seq, const MemoryConfig& memory) {
  Config c;
  auto& m = c.model;
  m.vocab_size = 32000, m.hidden_size = 256, m.intermediate_size = 1024, m.num_layers = 4;
  m.num_heads = 4, m.num_kv_heads = 4, m.max_seq_len = seq, m.init_std = 0.02;
  c.data.seq_len = seq;
  c.train.global_batch_tokens = seq;
  c.memory = memory;
  return c;
}

Batch random_batch(int64_t seq) {
  at::manual_seed(0);
  auto tokens = at::randint(32000, {1, seq + 1}, at::kLong);
  return {tokens.narrow(1, 0, seq).contiguous(), tokens.narrow(1, 1, seq).contiguous(),
          at::arange(seq, at::kLong).view({1, seq}), at::Tensor(), at::Tensor()};
}

// Working memory and seconds of one training step's forward and backward.
std::pair<double, double> measure(int64_t seq, const MemoryConfig& memory) {
  Trainer trainer(bench_config(seq, memory));
  const Batch batch = random_batch(seq);
  trainer.compute_gradients(batch, 1);  // warm-up: gradients and caches allocated
  reset_peak_memory(at::kCPU);
  const double before = static_cast<double>(peak_memory_bytes(at::kCPU));
  const auto start = std::chrono::steady_clock::now();
  trainer.compute_gradients(batch, 2);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return {static_cast<double>(peak_memory_bytes(at::kCPU)) - before, seconds};
}

void longest(double cap_mib) {
  for (const auto& f : features()) {
    if (std::string(f.name) != "none" && std::string(f.name) != "all") continue;
    int64_t best = 0;
    double best_memory = 0;
    for (int64_t seq = 512; seq <= (int64_t{1} << 17); seq *= 2) {
      const double memory = measure(seq, f.memory).first;
      if (memory > cap_mib * (1 << 20)) break;
      best = seq, best_memory = memory;
    }
    nlohmann::ordered_json out = {{"mode", "longest"}, {"features", f.name}, {"cap_mib", cap_mib},
                                  {"longest_seq", best}, {"step_memory_bytes", best_memory}};
    std::printf("%s\n", out.dump().c_str());
    std::fflush(stdout);
  }
}

void cost(int64_t seq, int steps) {
  for (const auto& f : features()) {
    std::vector<double> times;
    double memory = 0;
    for (int s = 0; s < steps; ++s) {
      auto [bytes, seconds] = measure(seq, f.memory);
      times.push_back(seconds), memory = bytes;
    }
    std::sort(times.begin(), times.end());
    nlohmann::ordered_json out = {{"mode", "cost"}, {"features", f.name}, {"seq", seq},
                                  {"step_s", times[times.size() / 2]}, {"step_memory_bytes", memory}};
    std::printf("%s\n", out.dump().c_str());
    std::fflush(stdout);
  }
}

}  // namespace
}  // namespace lt

int main(int argc, char** argv) {
  lt::MpiSession mpi(&argc, &argv);
  at::set_num_threads(static_cast<int>(lt::default_threads(0)));
  try {
    const std::string mode = argc > 1 ? argv[1] : "";
    if (mode == "longest" && argc > 2) lt::longest(std::atof(argv[2]));
    else if (mode == "cost" && argc > 2) lt::cost(std::atoll(argv[2]), argc > 3 ? std::atoi(argv[3]) : 3);
    else lt::fail("usage: lt_bench_mem longest CAP_MIB | cost SEQ [STEPS]");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "lt_bench_mem: %s\n", e.what());
    return 1;
  }
  return 0;
}
