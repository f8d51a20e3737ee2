// Mixture of experts on one process:
//  step: a training step of an MoE model against a dense one with the same
//    active parameters (8 experts, top 2, each half the dense MLP's width,
//    in every layer), 4 layers of hidden 256 at 2048 tokens, best of REPEATS;
//  balance: 60 steps of the tiny MoE recipe's model (8 experts, top 2) on
//    the passkey corpus, 8 sequences a step in micro-batches of one, with
//    the balance loss over each micro-batch vs over the global batch: the
//    experts' load (coefficient of variation, max / mean) over the last 20
//    steps, and the language-model loss.
//
// usage: lt_bench_moe step REPEATS | lt_bench_moe balance

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>

#include "core/data/document_source.h"
#include "core/data/packer.h"
#include "core/train/lr_schedule.h"
#include "core/train/trainer.h"
#include "core/util/error.h"
#include "core/util/resources.h"
#include "parallel/mesh/mesh.h"
#include "tests/bench/bench_support.h"

namespace lt {
namespace {

Config model_config(bool moe) {
  Config c;
  auto& m = c.model;
  m.vocab_size = 1024, m.hidden_size = 256, m.intermediate_size = 1024, m.num_layers = 4;
  m.num_heads = 4, m.num_kv_heads = 4, m.max_seq_len = 2048, m.init_std = 0.02;
  if (moe) m.moe.experts = 8, m.moe.top_k = 2, m.moe.expert_intermediate_size = 512;
  c.data.seq_len = 2048;
  c.train.global_batch_tokens = 2048;
  return c;
}

void step(int repeats) {
  const Batch batch = bench::random_batch(2048, 1024);
  nlohmann::ordered_json out = {{"bench", "step"}, {"tokens", 2048}, {"threads", at::get_num_threads()}};
  for (bool moe : {false, true}) {
    const Config c = model_config(moe);
    Trainer trainer(c);
    int64_t n = 0;
    const double best = bench::best_of(repeats, [&] { trainer.compute_gradients(batch, ++n); });
    int64_t all = 0;
    for (const auto& p : trainer.model().parameters()) all += p.numel();
    const std::string name = moe ? "moe" : "dense";
    out[name + "_s"] = best;
    out[name + "_active_parameters"] = flop_parameters(c.model);
    out[name + "_parameters"] = all;
  }
  out["moe_vs_dense"] = out["moe_s"].get<double>() / out["dense_s"].get<double>();
  std::printf("%s\n", out.dump().c_str());
}

void balance() {
  for (const std::string scope : {"micro_batch", "global_batch"}) {
    Config c = load_config("recipes/tiny-moe.yaml", {"model.moe.balance=" + scope, "train.steps=60",
                                                     "train.global_batch_tokens=2K", "train.micro_batch_size=1",
                                                     "model.moe.every=1", "model.moe.shared_expert_intermediate_size=0"});
    Trainer trainer(c);
    auto source = make_document_source(c.data, c.model.vocab_size, c.train.seed, Split::Train);
    Packer packer(*source, c.data);
    double cv = 0, peak = 0, loss = 0;
    for (int64_t s = 0; s < c.train.steps; ++s) {
      double norm = 0;
      const double l = trainer.step(packer.next(c.sequences_per_step(s), c.data.seq_len), s + 1,
                                    learning_rate(c.train, s), norm);
      if (s < c.train.steps - 20) continue;
      cv += trainer.moe_stats().load_cv / 20, peak += trainer.moe_stats().load_max / 20, loss += l / 20;
    }
    nlohmann::ordered_json out = {{"bench", "balance"}, {"balance", scope}, {"steps", c.train.steps},
                                  {"load_cv", cv}, {"load_max", peak}, {"loss", loss}};
    std::printf("%s\n", out.dump().c_str());
  }
}

}  // namespace
}  // namespace lt

int main(int argc, char** argv) {
  return lt::bench::main(argc, argv, "lt_bench_moe", [&] {
    const std::string which = argc > 1 ? argv[1] : "";
    if (which == "step" && argc == 3) lt::step(std::max(1, std::atoi(argv[2])));
    else if (which == "balance" && argc == 2) lt::balance();
    else lt::fail("usage: lt_bench_moe step REPEATS | lt_bench_moe balance");
  });
}
