// Activation memory of one training step (forward and backward) in a fresh
// process, so that no memory freed by an earlier run is reused unseen: the
// working memory of a step (peak resident minus resident before it, after a
// short warm-up that sets up the libraries) and the best time of the next
// REPEATS (default 1; single steps on a busy machine vary by 10-20%), for
// one sequence length and one set of memory features ("offload": checkpoint
// with the layers' state in host chunks, none persistent, two buffers: on
// CPU the cost of the chunk manager's copies). A 4-layer Llama with
// hidden 256 and a 32K vocabulary (the logits weigh most, as in real models
// at long context). scripts/bench.sh searches the longest sequence under a
// cap with none and with all features, and the step time of each feature
// at a length where all fit.
//
// usage: lt_bench_mem SEQ none|checkpoint|tiled_mlp|tiled_loss|all|offload [REPEATS]

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>

#include "train/trainer.h"
#include "core/util/error.h"
#include "core/util/resources.h"
#include "parallel/mesh/mesh.h"
#include "tests/bench/bench_support.h"

namespace lt {
namespace {

MemoryConfig features(const std::string& name) {
  if (name == "none") return {};
  if (name == "checkpoint") return {Recompute::full, 1, "1", "1"};
  if (name == "tiled_mlp") return {Recompute::none, 1, "auto", "1"};
  if (name == "tiled_loss") return {Recompute::none, 1, "1", "auto"};
  if (name == "all") return {Recompute::full, 1, "auto", "auto"};
  if (name == "offload") {
    MemoryConfig m{Recompute::full, 1, "1", "1"};
    m.offload_model = true;
    m.chunk_mb = 1;  // below a layer's 4 MiB: a chunk per layer
    m.n_persist = 0;
    return m;
  }
  fail("features must be none, checkpoint, tiled_mlp, tiled_loss, all or offload, not '" + name + "'");
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

void step(int64_t seq, const std::string& name, int repeats) {
  Trainer trainer(bench_config(seq, features(name)));
  const Batch batch = bench::random_batch(seq, 32000);
  trainer.compute_gradients(bench::random_batch(64, 32000), 1);  // the libraries' one-time set-up, on a short sequence
  reset_peak_memory(at::kCPU);
  const double before = static_cast<double>(peak_memory_bytes(at::kCPU));
  trainer.compute_gradients(batch, 1);
  const double memory = static_cast<double>(peak_memory_bytes(at::kCPU)) - before;
  int64_t n = 1;
  const double seconds = bench::best_of(
      repeats, [&] { trainer.compute_gradients(batch, ++n); }, 0);
  nlohmann::ordered_json out = {{"features", name}, {"seq", seq}, {"step_memory_bytes", memory}, {"step_s", seconds}};
  std::printf("%s\n", out.dump().c_str());
}

}  // namespace
}  // namespace lt

int main(int argc, char** argv) {
  return lt::bench::main(argc, argv, "lt_bench_mem", [&] {
    if (argc != 3 && argc != 4)
      lt::fail("usage: lt_bench_mem SEQ none|checkpoint|tiled_mlp|tiled_loss|all|offload [REPEATS]");
    lt::step(std::atoll(argv[1]), argv[2], argc == 4 ? std::max(1, std::atoi(argv[3])) : 1);
  });
}
