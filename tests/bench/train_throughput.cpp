// Single-process training throughput of longtrain's trainer (the path a
// recipe takes: compute weights, gradient buckets, clipping, fused AdamW):
// tokens/s, MFU against the bf16 matrix-product peak measured in the same
// process, and peak memory. Prints one JSON object. scripts/bench.sh runs it
// interleaved with HF transformers' loop (tests/bench/hf_train.py) on the
// same model shape.
//
// usage: lt_bench_train SEQ [STEPS] [fp32|bf16] [cpu|cuda] [LAYERS [offload] [documents]]
// LAYERS > 0: a Llama-3-8B-shaped stack of that many layers (the GPU check,
// scripts/gpu_check.sh) instead of the 56M model; `offload`: its state in
// host chunks, every layer recomputed, MLP and loss tiled (ALST's setup);
// `documents`: the sequence packs documents of 1/2, 1/4, 1/8, 1/16 and
// 1/16 of it, each attending only to itself (the variable-length kernel on
// CUDA).
#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/model/model_size.h"
#include "train/trainer.h"
#include "tests/bench/bench_support.h"

int main(int argc, char** argv) {
  using namespace lt;
  return bench::main(argc, argv, "lt_bench_train", [&] {
    const int64_t seq = argc > 1 ? std::atoll(argv[1]) : 2048;
    const int64_t steps = argc > 2 ? std::atoll(argv[2]) : 4;
    Config c;
    c.train.precision = parse_choice<Precision>(argc > 3 ? argv[3] : "bf16");
    c.train.device = parse_choice<DeviceKind>(argc > 4 ? argv[4] : "cpu");
    const int64_t llama3_layers = argc > 5 ? std::atoll(argv[5]) : 0;
    auto& m = c.model;  // the 56M Llama of issue 19's comparison with HF
    m.hidden_size = 512, m.num_layers = 8, m.num_heads = 8, m.num_kv_heads = 4;
    m.intermediate_size = 1376, m.vocab_size = 32000, m.tie_embeddings = false;
    if (llama3_layers > 0) {
      m.hidden_size = 4096, m.num_layers = llama3_layers, m.num_heads = 32, m.num_kv_heads = 8;
      m.intermediate_size = 14336, m.vocab_size = 128256, m.rope_theta = 500000;
      c.memory.mlp_tiles = "auto";
    }
    const std::vector<std::string> flags(argv + std::min(argc, 6), argv + argc);
    auto has = [&](const char* flag) { return std::find(flags.begin(), flags.end(), flag) != flags.end(); };
    const bool offload = has("offload"), documents = has("documents");
    if (offload) {
      c.memory.offload_model = true, c.memory.checkpoint = Recompute::full, c.memory.offload_activations = true;
      c.memory.n_persist = 0, c.memory.n_buffer = 2, c.memory.chunk_mb = 1024;
    }
    c.data.seq_len = seq;
    c.train.global_batch_tokens = seq;
    c.train.steps = steps + 1;
    c.memory.loss_tiles = "auto";
    const at::Device device = device_for(c.train.device);
    const double peak = measure_matmul_peak(device, at::kBFloat16);
    Trainer trainer(c);
    Batch batch = bench::random_batch(seq, m.vocab_size);
    if (documents) bench::pack_documents(batch);
    reset_peak_memory(device);
    double seconds = 0;
    for (int64_t s = 0; s <= steps; ++s) {  // step 0 warms up
      const auto start = std::chrono::steady_clock::now();
      trainer.step(batch, s + 1, 1e-4);
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
                                  {"threads", at::get_num_threads()}};
    std::printf("%s\n", out.dump().c_str());
  });
}
