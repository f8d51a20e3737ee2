// Mixture of experts:
//  step: a training step of an MoE model against a dense one with the same
//    active parameters (8 experts, top 2, each half the dense MLP's width,
//    in every layer), 4 layers of hidden 256 at 2048 tokens, best of REPEATS;
//  balance: 60 steps of the tiny MoE recipe's model (8 experts, top 2) on
//    the passkey corpus, 8 sequences a step in micro-batches of one, with
//    the balance loss over each micro-batch vs over the global batch: the
//    experts' load (coefficient of variation, max / mean) over the last 20
//    steps, and the language-model loss;
//  dispatch (under mpirun -np P): what each rank sends over the ep group in
//    one step, against theory from the step's routing;
//  layer: one MoE layer shaped like Qwen3-30B-A3B's (hidden 2048, 128
//    experts, top 8, width 768) on 512 tokens, forward and backward: the
//    grouped products against the loop over experts longtrain ran before
//    (a host copy of the counts, then one product per expert), interleaved,
//    best of REPEATS; and in each arm's operator trace (at::RecordFunction,
//    the profiler's hook) the operators that make the host wait for a GPU.
//
// usage: lt_bench_moe step REPEATS | lt_bench_moe balance | lt_bench_moe layer REPEATS |
//        mpirun -np P lt_bench_moe dispatch

#include <ATen/record_function.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <cstdlib>
#include <nlohmann/json.hpp>

#include "core/data/document_source.h"
#include "core/data/packer.h"
#include "core/optim/lr_schedule.h"
#include "core/model/model_size.h"
#include "core/model/moe.h"
#include "train/trainer.h"
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
    Config c =
        load_config("recipes/tiny-moe.yaml",
                    {"model.moe.balance=" + scope, "train.steps=60", "train.global_batch_tokens=2K",
                     "train.micro_batch_size=1", "model.moe.every=1", "model.moe.shared_expert_intermediate_size=0"});
    Trainer trainer(c);
    auto source = make_document_source(c.data, c.model.vocab_size, c.train.seed, Split::Train);
    Packer packer(*source, c.data);
    double cv = 0, peak = 0, loss = 0;
    for (int64_t s = 0; s < c.train.steps; ++s) {
      const double l =
          trainer.step(packer.next(c.sequences_per_step(s), c.data.seq_len), s + 1, learning_rate(c.train, s)).loss;
      if (s < c.train.steps - 20) continue;
      cv += trainer.moe_stats().load_cv / 20, peak += trainer.moe_stats().load_max / 20, loss += l / 20;
    }
    nlohmann::ordered_json out = {{"bench", "balance"}, {"balance", scope}, {"steps", c.train.steps},
                                  {"load_cv", cv},      {"load_max", peak}, {"loss", loss}};
    std::printf("%s\n", out.dump().c_str());
  }
}

// Bytes each rank sends over the ep group in one step's forward and backward
// (experts over all P ranks, one micro-batch of one sequence per rank)
// against theory from the routing: the rows it dispatches to other ranks'
// experts and the rows other ranks dispatched to it, each going out once in
// forward (dispatch, combine) and once in backward (their gradients), plus
// the per-expert counts exchanged in forward.
void dispatch() {
  Config c = model_config(true);
  int P = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &P);
  c.data.seq_len = c.model.max_seq_len = 1024;
  c.train.global_batch_tokens = 1024 * P;
  c.parallel.ep = P;
  Mesh mesh(Layout(resolve_degrees(c, P)), MPI_COMM_WORLD, 600);
  Trainer trainer(c, &mesh);
  auto& ep = mesh.group(Group::ep);
  auto& world = mesh.group(Group::world);
  const Batch batch = bench::random_batch(1024, c.model.vocab_size, P);
  ep.reset_counters();
  trainer.compute_gradients(batch, 1);
  const double measured = static_cast<double>(ep.counters().at("all_to_all").bytes);
  // Every rank's selections [P, layers, experts].
  const auto all = world.all_gather(trainer.moe_stats().selections.unsqueeze(0).contiguous());
  const int64_t E = c.model.moe.experts, local = E / P, me = ep.rank();
  const auto mine = all.narrow(2, me * local, local);
  const double sent = (all[world.rank()].sum() - mine[world.rank()].sum()).item<double>();
  const double arrived = (mine.sum() - mine[world.rank()].sum()).item<double>();
  int64_t moe_layers = 0;
  for (int64_t l = 0; l < c.model.num_layers; ++l) moe_layers += c.model.moe.is_moe_layer(l);
  const double row = 4.0 * c.model.hidden_size;
  const double theory = 2 * (sent + arrived) * row + moe_layers * (E - local) * 8.0;
  auto both = at::tensor({measured, theory, sent, arrived}, at::kDouble).unsqueeze(0);
  const auto gathered = world.all_gather(both);
  if (world.rank() != 0) return;
  for (int r = 0; r < P; ++r) {
    const auto g = gathered[r];
    nlohmann::ordered_json out = {{"bench", "dispatch"},
                                  {"ranks", P},
                                  {"rank", r},
                                  {"tokens_per_rank", 1024},
                                  {"measured_bytes", g[0].item<double>()},
                                  {"theory_bytes", g[1].item<double>()},
                                  {"rows_sent", g[2].item<double>()},
                                  {"rows_arrived", g[3].item<double>()},
                                  {"measured_over_theory", g[0].item<double>() / g[1].item<double>()}};
    std::printf("%s\n", out.dump().c_str());
  }
}

// Operators that wait for the device on CUDA: a scalar read (.item()), an
// output whose size depends on the values, a bincount (it reads the
// maximum). On CPU nothing waits; the trace counts what would. Those inside
// a grouped product are LibTorch's CPU fallback's (a loop over the groups
// reading each offset), counted apart: on H100/H200 in bf16 it is one kernel. Those inside
// a grouped product are LibTorch's CPU fallback's (a loop over the groups
// reading each offset), counted apart: on H100/H200 in bf16 it is one kernel.
std::atomic<int64_t> g_syncs{0}, g_fallback_syncs{0};
thread_local int t_in_grouped_mm = 0;
bool waits_for_device(const char* op) {
  for (const char* name : {"aten::_local_scalar_dense", "aten::nonzero", "aten::bincount", "aten::unique",
                           "aten::_unique2", "aten::masked_select", "aten::repeat_interleave"})
    if (std::strcmp(op, name) == 0) return true;
  return false;
}

// The layer's experts as longtrain ran them before the grouped products:
// one module (its own weights) per expert.
struct LoopedExperts {
  std::vector<at::Tensor> gate_up, down;
};
at::Tensor looped_experts(LoopedExperts& experts, const at::Tensor& x, const Routing& r, int64_t n) {
  const int64_t k = r.experts.size(1);
  const auto kept = r.kept.reshape(-1).nonzero().squeeze(1);
  auto expert = r.experts.reshape(-1).index_select(0, kept);
  auto token = at::arange(x.size(0), expert.options()).repeat_interleave(k).index_select(0, kept);
  auto weight = r.weights.reshape(-1).index_select(0, kept);
  const auto order = at::argsort(expert, /*stable=*/true);
  token = token.index_select(0, order);
  weight = weight.index_select(0, order);
  const auto counts = at::bincount(expert, {}, n).cpu();  // the host waits here
  const int64_t* count = counts.data_ptr<int64_t>();
  const auto rows = x.index_select(0, token);
  std::vector<at::Tensor> outputs;
  for (int64_t e = 0, start = 0; e < n; ++e) {
    const auto halves = at::linear(rows.narrow(0, start, count[e]), experts.gate_up[e]).chunk(2, -1);
    outputs.push_back(at::linear(at::silu(halves[0]) * halves[1], experts.down[e]));
    start += count[e];
  }
  return at::zeros_like(x).index_add(0, token, at::cat(outputs) * weight.unsqueeze(1));
}

void layer(int repeats) {
  ModelConfig m;
  m.hidden_size = 2048, m.intermediate_size = 6144, m.num_layers = 1, m.num_heads = 32, m.num_kv_heads = 4;
  m.moe.experts = 128, m.moe.top_k = 8, m.moe.expert_intermediate_size = 768, m.moe.normalize_top_k = true;
  constexpr int64_t tokens = 512;
  auto balance = std::make_shared<MoeBalance>(m);
  ModelShard shard;
  shard.moe = balance;
  SparseMoe moe(m, shard, 0);
  at::manual_seed(0);
  for (auto& p : moe->parameters()) p.data().normal_(0, 0.02);
  LoopedExperts separate;  // the same values, one leaf per expert
  for (int64_t e = 0; e < m.moe.experts; ++e) {
    separate.gate_up.push_back(moe->experts->gate_up_proj[e].detach().clone().requires_grad_(true));
    separate.down.push_back(moe->experts->down_proj[e].detach().clone().requires_grad_(true));
  }
  const auto x = at::randn({1, tokens, m.hidden_size}).requires_grad_(true);
  const auto probe = at::randn({1, tokens, m.hidden_size});
  auto looped = [&] {
    const auto flat = x.view({tokens, -1});
    const auto routing = route(at::linear(flat, moe->gate->weight), m.moe);
    return balance->attach(0, looped_experts(separate, flat, routing, m.moe.experts), routing, 1).view_as(x);
  };
  // One forward and backward; returns the waits counted until the step's
  // end (which reads its statistics once, outside the layer).
  auto pass = [&](const std::function<at::Tensor()>& forward) {
    g_syncs = 0, g_fallback_syncs = 0;
    balance->begin_step(tokens, 1, 1);
    (forward() * probe).sum().backward();
    const int64_t waits = g_syncs;
    balance->end_step();
    moe->zero_grad();
    for (auto* weights : {&separate.gate_up, &separate.down})
      for (auto& w : *weights) w.mutable_grad() = at::Tensor();
    return waits;
  };
  auto grouped_pass = [&] { return moe(x); };
  auto handle = at::addGlobalCallback(at::RecordFunctionCallback(
      [](const at::RecordFunction& fn) -> std::unique_ptr<at::ObserverContext> {
        if (std::strstr(fn.name(), "grouped_mm")) ++t_in_grouped_mm;
        else if (waits_for_device(fn.name())) ++(t_in_grouped_mm ? g_fallback_syncs : g_syncs);
        return nullptr;
      },
      [](const at::RecordFunction& fn, at::ObserverContext*) {
        if (std::strstr(fn.name(), "grouped_mm")) --t_in_grouped_mm;
      }));
  const int64_t grouped_syncs = pass(grouped_pass), fallback_syncs = g_fallback_syncs;
  const int64_t looped_syncs = pass(looped);
  at::removeCallback(handle);
  double grouped = 1e30, loop = 1e30;
  for (int r = 0; r < repeats; ++r) {  // interleaved arms
    grouped = std::min(grouped, bench::best_of(
                                    1, [&] { pass(grouped_pass); }, 0));
    loop = std::min(loop, bench::best_of(
                              1, [&] { pass(looped); }, 0));
  }
  nlohmann::ordered_json out = {{"bench", "layer"},
                                {"tokens", tokens},
                                {"hidden", m.hidden_size},
                                {"experts", m.moe.experts},
                                {"top_k", m.moe.top_k},
                                {"expert_width", m.moe.expert_intermediate_size},
                                {"threads", at::get_num_threads()},
                                {"grouped_s", grouped},
                                {"loop_s", loop},
                                {"grouped_tokens_per_s", tokens / grouped},
                                {"loop_tokens_per_s", tokens / loop},
                                {"speedup", loop / grouped},
                                {"grouped_syncs", grouped_syncs},
                                {"grouped_cpu_fallback_syncs", fallback_syncs},
                                {"loop_syncs", looped_syncs}};
  std::printf("%s\n", out.dump().c_str());
}

}  // namespace
}  // namespace lt

int main(int argc, char** argv) {
  return lt::bench::main(argc, argv, "lt_bench_moe", [&] {
    const std::string which = argc > 1 ? argv[1] : "";
    if (which == "step" && argc == 3) lt::step(std::max(1, std::atoi(argv[2])));
    else if (which == "balance" && argc == 2) lt::balance();
    else if (which == "dispatch" && argc == 2) lt::dispatch();
    else if (which == "layer" && argc == 3) lt::layer(std::max(1, std::atoi(argv[2])));
    else
      lt::fail(
          "usage: lt_bench_moe step REPEATS | lt_bench_moe balance | lt_bench_moe layer REPEATS | "
          "mpirun -np P lt_bench_moe dispatch");
  });
}
