// Single-process training throughput of longtrain's trainer (the path a
// recipe takes: compute weights, gradient buckets, clipping, fused AdamW):
// tokens/s, MFU against the fastest matrix-product rate measured in the
// same process (the trainer's), peak memory and each step's loss. Prints
// one JSON object. scripts/bench.sh runs it interleaved with HF
// transformers' loop (tests/bench/hf_train.py) on the same model shape.
//
// usage: lt_bench_train SEQ [STEPS] [fp32|bf16] [cpu|cuda] [LAYERS [offload] [documents]]
//        lt_bench_train plan SEQ
// LAYERS > 0: a Llama-3-8B-shaped stack of that many layers (the GPU check,
// scripts/gpu_check.sh) instead of the 56M model; `offload`: its state in
// host chunks, every layer recomputed with its input in host memory, MLP and
// loss tiled (ALST's setup); `documents`: the sequence packs documents of
// 1/2, 1/4, 1/8, 1/16 and 1/16 of it, each attending only to itself (the
// variable-length kernel on CUDA).
// `plan`: before any device work, the most of the 8B model's 32 layers whose
// offloaded state and activations at SEQ tokens fit three quarters of the
// host's memory, as the planner (`longtrain plan`) computes them; one JSON
// object. LT_HOST_MEMORY_KB stands in for the host's memory (a rehearsal).
#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/model/model_size.h"
#include "core/util/bf16_support.h"
#include "core/util/resources.h"
#include "train/plan.h"
#include "train/trainer.h"
#include "tests/bench/bench_support.h"

namespace lt {
namespace {

constexpr int64_t kLlama3Layers = 32;

// The benchmark's run: the 56M Llama of issue 19's comparison with HF, or
// `layers` of the Llama-3-8B shape.
Config bench_config(int64_t seq, int64_t steps, int64_t layers, bool offload) {
  Config c;
  auto& m = c.model;
  m.hidden_size = 512, m.num_layers = 8, m.num_heads = 8, m.num_kv_heads = 4;
  m.intermediate_size = 1376, m.vocab_size = 32000, m.tie_embeddings = false;
  if (layers > 0) {
    m.hidden_size = 4096, m.num_layers = layers, m.num_heads = 32, m.num_kv_heads = 8;
    m.intermediate_size = 14336, m.vocab_size = 128256, m.rope_theta = 500000;
    c.memory.mlp_tiles = "auto";
  }
  if (offload) {
    c.memory.offload_model = true, c.memory.checkpoint = Recompute::full, c.memory.offload_activations = true;
    c.memory.n_persist = 0, c.memory.n_buffer = 2, c.memory.chunk_mb = 1024;
  }
  c.data.seq_len = seq;
  c.train.global_batch_tokens = seq;
  c.train.steps = steps + 1;
  c.memory.loss_tiles = "auto";
  return c;
}

int64_t host_memory_bytes() {
  if (const char* kb = std::getenv("LT_HOST_MEMORY_KB")) return std::atoll(kb) * 1024;
  return memory_capacity_bytes(at::kCPU);
}

// The most layers of the 8B model, offloaded on one bf16 CUDA rank, whose
// host state and host activations at `seq` fit three quarters of the host.
nlohmann::ordered_json plan_longest(int64_t seq) {
  const int64_t limit = host_memory_bytes() / 4 * 3;
  nlohmann::ordered_json out = {{"plan", "offload"}, {"seq", seq}, {"layers", 0}, {"host_limit_bytes", limit}};
  for (int64_t layers = 1; layers <= kLlama3Layers; ++layers) {
    Config c = bench_config(seq, 1, layers, true);
    c.train.precision = Precision::bf16, c.train.device = DeviceKind::cuda;
    const StagePlan st = plan_stages(c, resolve_degrees(c, 1)).front();
    if (st.host + st.host_activations > limit) break;
    out["layers"] = layers, out["host_state_bytes"] = st.host, out["host_activation_bytes"] = st.host_activations;
    out["device_bytes"] = st.total();  // the resident chunks counted in
  }
  return out;
}

void run(int argc, char** argv) {
  if (argc > 1 && std::string(argv[1]) == "plan") {
    std::printf("%s\n", plan_longest(argc > 2 ? std::atoll(argv[2]) : 65536).dump().c_str());
    return;
  }
  const int64_t seq = argc > 1 ? std::atoll(argv[1]) : 2048;
  const int64_t steps = argc > 2 ? std::atoll(argv[2]) : 4;
  const int64_t llama3_layers = argc > 5 ? std::atoll(argv[5]) : 0;
  const std::vector<std::string> flags(argv + std::min(argc, 6), argv + argc);
  auto has = [&](const char* flag) { return std::find(flags.begin(), flags.end(), flag) != flags.end(); };
  const bool offload = has("offload"), documents = has("documents");
  Config c = bench_config(seq, steps, llama3_layers, offload);
  c.train.precision = parse_choice<Precision>(argc > 3 ? argv[3] : "bf16");
  c.train.device = parse_choice<DeviceKind>(argc > 4 ? argv[4] : "cpu");
  const auto& m = c.model;
  const at::Device device = device_for(c.train.device);
  const double peak = peak_matmul_flops(device);
  Trainer trainer(c);
  Batch batch = bench::random_batch(seq, m.vocab_size);
  if (documents) bench::pack_documents(batch);
  reset_peak_memory(device);
  double seconds = 0;
  std::vector<double> losses;
  for (int64_t s = 0; s <= steps; ++s) {  // step 0 warms up
    const auto start = std::chrono::steady_clock::now();
    losses.push_back(trainer.step(batch, s + 1, 1e-4).loss);
    if (s > 0) seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }
  const double tokens_per_s = steps * seq / seconds;
  int64_t parameters = 0;
  for (const auto& p : trainer.model().parameters()) parameters += p.numel();
  nlohmann::ordered_json out = {{"impl", "longtrain-" + name(c.train.precision)},
                                {"seq", seq},
                                {"parameters", parameters},
                                {"tokens_per_s", tokens_per_s},
                                {"mfu", tokens_per_s * flops_per_token(m, seq) / peak},
                                {"peak_gflops", peak / 1e9},
                                {"device", name(c.train.device)},
                                {"layers", m.num_layers},
                                {"offload", offload},
                                {"documents", documents ? batch.documents.max().item<int64_t>() + 1 : 1},
                                {"peak_memory_bytes", peak_memory_bytes(device)},
                                {"losses", losses},
                                {"threads", at::get_num_threads()}};
  std::printf("%s\n", out.dump().c_str());
}

}  // namespace
}  // namespace lt

int main(int argc, char** argv) {
  return lt::bench::main(argc, argv, "lt_bench_train", [&] { lt::run(argc, argv); });
}
