// Tensor and pipeline parallelism against their theory, on this job's ranks.
//   bubble MICRO [STEPS]: a pp = P pipeline (1F1B) over MICRO micro-batches;
//     each stage's idle fraction (1 - its forward/backward time / the step
//     time of the slowest stage), averaged over stages, median over steps,
//     against (p-1)/(m+p-1). Idle includes the point-to-point transfers.
//   tp SEQ [SPLIT]: one forward and backward with tp = P (SPLIT 1: Megatron's
//     sequence split, 0: plain all-reduces); the bytes each rank sends over
//     the wire (ring algorithms: an all-reduce sends 2(p-1)/p of its tensor,
//     a reduce-scatter (p-1)/p of its input, an all-gather (p-1) times its
//     input) against the theory.
// Rank 0 prints one JSON object; scripts/bench.sh runs both.
//
// usage: mpirun -np P lt_bench_mp bubble MICRO [STEPS] | tp SEQ [SPLIT]
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>

#include "core/model/loss.h"
#include "core/util/error.h"
#include "parallel/mesh/mesh.h"
#include "parallel/pipeline/pipeline.h"
#include "train/rank_model.h"
#include "parallel/sequence/sequence_shard.h"
#include "parallel/tensor_parallel/tensor_parallel.h"
#include "tests/bench/bench_support.h"

namespace lt {
namespace {

Config bench_config(int64_t seq, int layers, int64_t vocab) {
  Config c;
  auto& m = c.model;
  m.hidden_size = 256, m.num_layers = layers, m.num_heads = m.num_kv_heads = 8, m.intermediate_size = 768;
  m.vocab_size = vocab, m.max_seq_len = seq, m.attention_block = 128;
  c.data.seq_len = seq;
  c.train.micro_batch_size = 1;
  return c;
}

double reduced(Communicator& world, double value, ReduceOp op) {
  auto t = at::tensor({value}, at::kDouble);
  world.all_reduce(t, op);
  return t.item<double>();
}

void bubble(int micro, int steps) {
  int P = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &P);
  Config c = bench_config(512, 2 * P, 256);  // a small head: stages of equal cost
  c.parallel.pp = P;
  Mesh mesh(Layout({1, 1, 1, 1, P, 1}), MPI_COMM_WORLD, 600);
  RankModel rm = build_rank_model(c, mesh);
  Pipeline pipeline(mesh.group(Group::pp), at::kFloat);
  const Batch batch = bench::random_batch(c.data.seq_len, c.model.vocab_size, micro);
  StageWork work;
  work.shape = [&](int) { return std::vector<int64_t>{1, c.data.seq_len, c.model.hidden_size}; };
  work.forward = [&](int m, const at::Tensor& input) {
    const Batch mine = batch.rows(m, 1);
    auto out = rm.model->forward(model_input(mine), input);
    return rm.model->shard().last_stage ? rm.loss_sum(out, mine.labels) / static_cast<double>(batch.tokens.numel())
                                        : out;
  };
  std::vector<double> idle, seconds;
  for (int s = 0; s <= steps; ++s) {
    rm.model->zero_grad();
    mesh.group(Group::world).barrier();
    pipeline.run(micro, work);
    if (s == 0) continue;  // warm-up
    auto& world = mesh.group(Group::world);
    const double step = reduced(world, pipeline.total_seconds(), ReduceOp::max);
    idle.push_back(reduced(world, 1 - pipeline.compute_seconds() / step, ReduceOp::sum) / P);
    seconds.push_back(step);
  }
  std::sort(idle.begin(), idle.end());
  std::sort(seconds.begin(), seconds.end());
  if (mesh.rank() != 0) return;
  nlohmann::ordered_json out = {{"mode", "bubble"},
                                {"stages", P},
                                {"micro_batches", micro},
                                {"idle_measured", idle[idle.size() / 2]},
                                {"idle_theory", bubble_fraction(P, micro)},
                                {"step_s", seconds[seconds.size() / 2]}};
  std::printf("%s\n", out.dump().c_str());
}

// What the ring algorithms send for the payloads the counters recorded.
double wire_bytes(const Communicator& comm) {
  const double p = comm.size();
  double total = 0;
  for (const auto& [op, counter] : comm.counters()) {
    if (op == "all_reduce") total += 2 * (p - 1) / p * counter.bytes;
    else if (op == "reduce_scatter") total += (p - 1) / p * counter.bytes;
    else if (op == "all_gather") total += (p - 1) * counter.bytes;
  }
  return total;
}

void tensor_traffic(int64_t seq, bool split) {
  int P = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &P);
  Config c = bench_config(seq, 2, 1024);
  c.parallel.tp = P;
  c.parallel.tp_sequence = split;
  Mesh mesh(Layout({P, 1, 1, 1, 1, 1}), MPI_COMM_WORLD, 600);
  RankModel rm = build_rank_model(c, mesh);
  const Batch batch = bench::random_batch(seq, c.model.vocab_size);
  auto& tp = mesh.group(Group::tp);
  tp.reset_counters();
  rm.loss_sum(rm.model->forward(model_input(batch)), batch.labels).backward();
  // Per layer, forward and backward: two region entries and two exits of
  // the [b, s, h] activations, 8 (p-1)/p of it in all (either way); the
  // embedding's exit and the head's entry 2 (p-1)/p each; the loss's three
  // all-reduces of one fp32 per token.
  const double p = P, tensor = static_cast<double>(seq) * c.model.hidden_size * 4;
  const double theory = (8.0 * c.model.num_layers + 4) * (p - 1) / p * tensor + 3 * 2 * (p - 1) / p * seq * 4;
  const double measured = wire_bytes(tp);
  if (mesh.rank() != 0) return;
  nlohmann::ordered_json out = {{"mode", "tp"},
                                {"tp", P},
                                {"sequence_split", split},
                                {"seq", seq},
                                {"layers", c.model.num_layers},
                                {"bytes_measured", measured},
                                {"bytes_theory", theory},
                                {"per_layer_forward_theory", tp_forward_bytes(1, seq, c.model.hidden_size, P, 4)}};
  std::printf("%s\n", out.dump().c_str());
}

}  // namespace
}  // namespace lt

int main(int argc, char** argv) {
  lt::MpiSession mpi(&argc, &argv);
  at::set_num_threads(1);
  try {
    const std::string mode = argc > 1 ? argv[1] : "";
    if (mode == "bubble" && argc > 2) lt::bubble(std::atoi(argv[2]), argc > 3 ? std::atoi(argv[3]) : 5);
    else if (mode == "tp" && argc > 2)
      lt::tensor_traffic(std::atoll(argv[2]), argc > 3 ? std::atoi(argv[3]) != 0 : true);
    else lt::fail("usage: lt_bench_mp bubble MICRO [STEPS] | tp SEQ [SPLIT]");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "lt_bench_mp: %s\n", e.what());
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  return 0;
}
