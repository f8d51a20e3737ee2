// The host optimizer of the chunked model state (memory.offload_model):
//  adamw: our AdamW (ATen's fused kernel) against the same update as
//    separate ATen operations (what a straightforward LibTorch AdamW does,
//    and ours did before), on ELEMENTS fp32 parameters, best of REPEATS;
//  step: a training step with every layer in host chunks, the chunks'
//    update after backward vs overlapped with it, without clipping and with
//    clipping that never triggers (the overlap then saves every chunk's
//    values and moments first). A Llama of 4 layers with hidden 1024 and a
//    short sequence (256 tokens), so that the update weighs against compute.
//    On a CPU build the update shares backward's cores: no gain is
//    expected there; the overlap pays where backward runs on a GPU.
//
// usage: lt_bench_opt adamw ELEMENTS REPEATS | lt_bench_opt step REPEATS

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <nlohmann/json.hpp>

#include "core/optim/adamw.h"
#include "train/trainer.h"
#include "core/util/error.h"
#include "core/util/resources.h"
#include "parallel/mesh/mesh.h"
#include "tests/bench/bench_support.h"

namespace lt {
namespace {

void adamw(int64_t elements, int repeats) {
  at::manual_seed(0);
  auto param = at::randn({elements});
  param.mutable_grad() = at::randn({elements});
  AdamW fused(std::vector<NamedParameter>{{"w.weight", param}}, AdamWOptions{});
  const double fused_s = bench::best_of(repeats, [&] { fused.step(1e-4); });
  // The update as separate operations: each a pass over memory, the
  // denominator a temporary.
  const AdamWOptions o;
  auto exp_avg = at::zeros_like(param), exp_avg_sq = at::zeros_like(param);
  const auto& grad = param.grad();
  int64_t steps = 0;
  const double ops_s = bench::best_of(repeats, [&] {
    at::NoGradGuard no_grad;
    ++steps;
    const double lr = 1e-4, bias1 = 1 - std::pow(o.beta1, steps), bias2 = 1 - std::pow(o.beta2, steps);
    param.mul_(1 - lr * o.weight_decay);
    exp_avg.mul_(o.beta1).add_(grad, 1 - o.beta1);
    exp_avg_sq.mul_(o.beta2).addcmul_(grad, grad, 1 - o.beta2);
    param.addcdiv_(exp_avg, (exp_avg_sq.sqrt() / std::sqrt(bias2)).add_(o.eps), -lr / bias1);
  });
  nlohmann::ordered_json out = {{"bench", "adamw"},   {"elements", elements}, {"threads", at::get_num_threads()},
                                {"fused_s", fused_s}, {"ops_s", ops_s},       {"speedup", ops_s / fused_s}};
  std::printf("%s\n", out.dump().c_str());
}

Config step_config(bool overlap, double clip) {
  Config c;
  auto& m = c.model;
  m.vocab_size = 1024, m.hidden_size = 1024, m.intermediate_size = 4096, m.num_layers = 4;
  m.num_heads = 8, m.num_kv_heads = 8, m.max_seq_len = 256, m.init_std = 0.02;
  c.data.seq_len = 256;
  c.train.global_batch_tokens = 256;
  c.train.grad_clip = clip;
  c.memory.checkpoint = Recompute::full;
  c.memory.offload_model = true;
  c.memory.chunk_mb = 1;  // a chunk per layer (48 MiB each)
  c.memory.overlap_update = overlap;
  return c;
}

void step(int repeats) {
  const Batch batch = bench::random_batch(256, 1024);
  nlohmann::ordered_json out = {{"bench", "step"}, {"tokens", 256}, {"threads", at::get_num_threads()}};
  for (const auto& [name, overlap, clip] :
       {std::tuple{"after_backward_s", false, 0.0}, std::tuple{"overlapped_s", true, 0.0},
        std::tuple{"overlapped_clip_s", true, 1e9}}) {
    Trainer trainer(step_config(overlap, clip));
    int64_t n = 0;
    out[name] = bench::best_of(repeats, [&] { trainer.step(batch, ++n, 1e-4); });
    int64_t chunked = 0;
    for (const auto& p : trainer.chunks()->host_parameters()) chunked += p.tensor.numel();
    out["chunked_parameters"] = chunked;
  }
  out["speedup"] = out["after_backward_s"].get<double>() / out["overlapped_s"].get<double>();
  std::printf("%s\n", out.dump().c_str());
}

}  // namespace
}  // namespace lt

int main(int argc, char** argv) {
  return lt::bench::main(argc, argv, "lt_bench_opt", [&] {
    const std::string which = argc > 1 ? argv[1] : "";
    if (which == "adamw" && argc == 4) lt::adamw(std::atoll(argv[2]), std::max(1, std::atoi(argv[3])));
    else if (which == "step" && argc == 3) lt::step(std::max(1, std::atoi(argv[2])));
    else lt::fail("usage: lt_bench_opt adamw ELEMENTS REPEATS | lt_bench_opt step REPEATS");
  });
}
