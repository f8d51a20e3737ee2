// Single-process training throughput of longtrain's engine: tokens/s and MFU
// against the matrix-product peak measured in the same process. Prints one
// JSON object. scripts/bench.sh runs it beside the plain-PyTorch baseline.
//
// usage: lt_bench_train SEQ [STEPS] [HIDDEN LAYERS HEADS INTERMEDIATE VOCAB]
#include <ATen/Parallel.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>

#include "core/data/batch.h"
#include "core/model/llama.h"
#include "core/train/adamw.h"
#include "core/train/loss.h"
#include "core/train/trainer.h"
#include "core/util/resources.h"

int main(int argc, char** argv) {
  using namespace lt;
  const int64_t seq = argc > 1 ? std::atoll(argv[1]) : 2048;
  const int64_t steps = argc > 2 ? std::atoll(argv[2]) : 4;
  ModelConfig m;
  m.hidden_size = argc > 3 ? std::atoll(argv[3]) : 512;
  m.num_layers = argc > 4 ? std::atoll(argv[4]) : 8;
  m.num_heads = m.num_kv_heads = argc > 5 ? std::atoll(argv[5]) : 8;
  m.intermediate_size = argc > 6 ? std::atoll(argv[6]) : 1536;
  m.vocab_size = argc > 7 ? std::atoll(argv[7]) : 32000;

  const at::Device cpu(at::kCPU);
  at::set_num_threads(static_cast<int>(default_threads(0)));
  const double peak = measure_matmul_peak(cpu);
  LlamaForCausalLM model(m);
  model->initialize(1);
  std::vector<NamedParameter> params;
  for (auto& item : model->named_parameters()) params.push_back({item.key(), item.value()});
  AdamW optimizer(params, {});

  at::manual_seed(0);
  auto tokens = at::randint(m.vocab_size, {1, seq + 1}, at::kLong);
  Batch batch{tokens.narrow(1, 0, seq).contiguous(), tokens.narrow(1, 1, seq).contiguous(),
              at::arange(seq, at::kLong).view({1, seq}), at::Tensor(), at::Tensor()};
  reset_peak_memory(cpu);
  double seconds = 0;
  for (int64_t s = 0; s <= steps; ++s) {  // step 0 warms up
    const auto start = std::chrono::steady_clock::now();
    optimizer.zero_grad();
    auto loss = loss_sum(*model, batch) / static_cast<double>(seq);
    loss.backward();
    optimizer.step(1e-4);
    (void)loss.item<double>();
    if (s > 0) seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }
  const double tokens_per_s = steps * seq / seconds;
  int64_t parameters = 0;
  for (const auto& p : model->parameters()) parameters += p.numel();
  nlohmann::ordered_json out = {{"impl", "longtrain"},
                                {"seq", seq},
                                {"parameters", parameters},
                                {"tokens_per_s", tokens_per_s},
                                {"mfu", tokens_per_s * flops_per_token(m, seq) / peak},
                                {"peak_gflops", peak / 1e9},
                                {"peak_memory_bytes", peak_memory_bytes(cpu)},
                                {"threads", at::get_num_threads()}};
  std::printf("%s\n", out.dump().c_str());
  return 0;
}
