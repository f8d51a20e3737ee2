// One long sequence split over this job's ranks: training-step tokens/s, peak
// memory per rank, and the bytes each rank's forward sends per layer against
// the theory, for Ulysses, ring (zigzag) and the hybrid; or, with `longest`,
// the longest sequence (doubling from 1K) whose training step stays within
// CAP MiB of working memory on every rank. Rank 0 prints one JSON object.
// scripts/bench.sh runs it on 1, 2, 4 and 8 ranks.
//
// usage: mpirun -np P lt_bench_sp ulysses|ring|hybrid SEQ [STEPS [documents]]
//        mpirun -np P lt_bench_sp ulysses|ring|hybrid longest CAP
// `documents`: the sequence packs five documents (bench::pack_documents).
#include <ATen/Parallel.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <thread>

#include "core/model/loss.h"
#include "core/util/error.h"
#include "core/util/resources.h"
#include "parallel/mesh/mesh.h"
#include "parallel/sequence/ring_attention.h"
#include "parallel/sequence/sequence_parallel.h"
#include "parallel/sequence/ulysses_attention.h"
#include "tests/bench/bench_support.h"

namespace lt {
namespace {

Degrees degrees_for(const std::string& layout, int P) {
  if (layout == "ulysses") return {1, P, 1, 1, 1, 1};
  if (layout == "ring") return {1, 1, P, 1, 1, 1};
  LT_CHECK(layout == "hybrid" && P % 2 == 0, "layout must be ulysses, ring or hybrid (an even number of ranks)");
  return {1, 2, P / 2, 1, 1, 1};
}

double max_over(Communicator& world, double value) {
  auto t = at::tensor({value}, at::kDouble);
  world.all_reduce(t, ReduceOp::max);
  return t.item<double>();
}

int64_t sent_bytes(Mesh& mesh) {
  int64_t total = 0;
  for (Group g : {Group::ulysses, Group::ring})
    for (const auto& [op, counter] : mesh.group(g).counters())
      if (op == "all_to_all" || op == "send") total += counter.bytes;
  return total;
}

ModelConfig bench_model(int64_t seq) {
  ModelConfig m;
  m.hidden_size = 256, m.num_layers = 2, m.num_heads = m.num_kv_heads = 8, m.intermediate_size = 768;
  m.vocab_size = 1024, m.max_seq_len = seq, m.attention_block = 256;
  return m;
}

// This rank's shard of one random sequence, with packed documents or one.
Batch sequence_shard(Mesh& mesh, const ModelConfig& m, int64_t seq, bool documents = false) {
  const auto& d = mesh.layout().degrees();
  Batch full = bench::random_batch(seq, m.vocab_size);
  if (documents) bench::pack_documents(full);
  if (d.world() == 1) return full;
  const auto c = mesh.coord();
  return shard_sequences(full, sequence_columns(seq, {d.ulysses, d.ring, true}, c.ulysses, c.ring));
}

// The most working memory (peak resident minus resident before) a training
// step takes on any rank.
double step_memory(Mesh& mesh, LlamaForCausalLMImpl& model, const Batch& mine, int64_t seq) {
  reset_peak_memory(at::kCPU);
  const double before = static_cast<double>(peak_memory_bytes(at::kCPU));
  model.zero_grad();
  (loss_sum(model, mine) / static_cast<double>(seq)).backward();
  return max_over(mesh.group(Group::world), static_cast<double>(peak_memory_bytes(at::kCPU)) - before);
}

void longest(const std::string& layout, double cap_mib) {
  int P = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &P);
  Mesh mesh(Layout(degrees_for(layout, P)), MPI_COMM_WORLD, 600);
  int64_t best = 0;
  double best_memory = 0;
  for (int64_t seq = 1024; seq <= (int64_t{1} << 17); seq *= 2) {
    LlamaForCausalLM model(bench_model(seq));
    model->initialize(1);
    if (P > 1) model->set_attention(sequence_parallel_attention(mesh));
    const double memory = step_memory(mesh, *model, sequence_shard(mesh, bench_model(seq), seq), seq);
    if (memory > cap_mib * (1 << 20)) break;
    best = seq, best_memory = memory;
  }
  if (mesh.rank() == 0) {
    nlohmann::ordered_json out = {{"layout", P > 1 ? layout : "one rank"},
                                  {"ranks", P},
                                  {"cap_mib", cap_mib},
                                  {"longest_seq", best},
                                  {"step_memory_bytes", best_memory}};
    std::printf("%s\n", out.dump().c_str());
  }
}

void run(const std::string& layout, int64_t seq, int64_t steps, bool documents) {
  int P = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &P);
  const Degrees d = degrees_for(layout, P);
  Mesh mesh(Layout(d), MPI_COMM_WORLD, 600);
  const ModelConfig m = bench_model(seq);
  LlamaForCausalLM model(m);
  model->initialize(1);
  if (P > 1) model->set_attention(sequence_parallel_attention(mesh));
  const Batch mine = sequence_shard(mesh, m, seq, documents);
  {  // the forward's volume, counted alone
    at::NoGradGuard no_grad;
    (void)loss_sum(*model, mine);
  }
  const int64_t bytes = sent_bytes(mesh);
  const int64_t local = seq / P, head_dim = m.hidden_size / m.num_heads;
  int64_t theory = 0;
  if (d.ulysses > 1) theory += ulysses_forward_bytes(1, local, m.num_heads, m.num_kv_heads, head_dim, d.ulysses, 4);
  if (d.ring > 1)
    theory += ring_forward_bytes(1, local * d.ulysses, m.num_kv_heads / d.ulysses, head_dim, d.ring, 4, documents);
  theory *= m.num_layers;

  reset_peak_memory(at::kCPU);
  double seconds = 0;
  for (int64_t s = 0; s <= steps; ++s) {  // step 0 warms up
    mesh.group(Group::world).barrier();
    const auto start = std::chrono::steady_clock::now();
    model->zero_grad();
    (loss_sum(*model, mine) / static_cast<double>(seq)).backward();
    const double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (s > 0) seconds += max_over(mesh.group(Group::world), t);
  }
  const double peak = max_over(mesh.group(Group::world), static_cast<double>(peak_memory_bytes(at::kCPU)));
  const double max_bytes = max_over(mesh.group(Group::world), static_cast<double>(bytes));
  if (mesh.rank() == 0) {
    nlohmann::ordered_json out = {{"layout", P > 1 ? layout : "one rank"},
                                  {"ranks", P},
                                  {"seq", seq},
                                  {"documents", documents ? 5 : 1},
                                  {"tokens_per_s", steps * seq / seconds},
                                  {"peak_memory_bytes_per_rank", peak},
                                  {"forward_bytes_per_rank", max_bytes},
                                  {"theory_bytes_per_rank", theory}};
    std::printf("%s\n", out.dump().c_str());
  }
}

}  // namespace
}  // namespace lt

int main(int argc, char** argv) {
  lt::MpiSession mpi(&argc, &argv);
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  at::set_num_threads(std::max(1, cores / mpi.world_size()));
  const std::string layout = argc > 1 ? argv[1] : "ulysses", second = argc > 2 ? argv[2] : "8192";
  try {
    if (second == "longest") lt::longest(layout, argc > 3 ? std::atof(argv[3]) : 256);
    else
      lt::run(layout, std::atoll(second.c_str()), argc > 3 ? std::atoll(argv[3]) : 2,
              argc > 4 && std::string(argv[4]) == "documents");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "lt_bench_sp: %s\n", e.what());
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  return 0;
}
