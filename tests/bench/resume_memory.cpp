// Host memory of a resume. 8 ranks (tp 2 x pp 2 x dp 2, ZeRO-1) write a
// checkpoint of a 56M-parameter Llama, then read it back: each its weights
// and moment shards on the layout that wrote it; the 8 as tp 4 x pp 2 (each
// tensor resharded from other parts); and one rank the whole model. Each
// reports the peak host memory its load added (VmHWM over the RSS before it:
// private copies and the file pages it touched) against the bytes of the
// weights and moments it holds. Resharding copies only the overlap of each
// file's part with the rank's, so every ratio stays near 1.
//
// usage: mpirun -np 8 lt_bench_resume DIR
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "train/checkpoint.h"
#include "train/trainer.h"
#include "core/util/error.h"
#include "parallel/mesh/layout.h"
#include "train/rank_model.h"
#include "tests/bench/bench_support.h"

namespace lt {
namespace {

int64_t resident_bytes() {
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);)
    if (line.rfind("VmRSS:", 0) == 0) return std::stoll(line.substr(6)) * 1024;
  return 0;
}

int64_t held_bytes(LlamaForCausalLMImpl& model, const AdamW& optimizer) {
  int64_t bytes = 0;
  for (const auto& p : model.parameters()) bytes += p.nbytes();
  for (const auto& s : optimizer.state()) bytes += s.exp_avg.nbytes() + s.exp_avg_sq.nbytes();
  return bytes;
}

std::vector<NamedParameter> named(LlamaForCausalLMImpl& model) {
  std::vector<NamedParameter> out;
  for (const auto& item : model.named_parameters()) out.push_back({item.key(), item.value()});
  return out;
}

// The peak host memory the load adds, and the bytes the rank holds.
void report(const char* layout, int rank, LlamaForCausalLMImpl& model, AdamW& optimizer,
            const std::string& checkpoint) {
  const at::Device cpu(at::kCPU);
  reset_peak_memory(cpu);
  const int64_t before = resident_bytes();
  load_checkpoint(checkpoint, model, &optimizer, nullptr);
  const int64_t added = peak_memory_bytes(cpu) - before, held = held_bytes(model, optimizer);
  std::printf(
      "{\"bench\": \"resume\", \"layout\": \"%s\", \"rank\": %d, \"held_bytes\": %lld, \"load_peak_bytes\": %lld, "
      "\"ratio\": %.3f}\n",
      layout, rank, static_cast<long long>(held), static_cast<long long>(added),
      static_cast<double>(added) / static_cast<double>(held));
  std::fflush(stdout);
}

void run(const std::string& dir) {
  Config c;
  c.run_dir = dir;
  c.model.vocab_size = 32000, c.model.hidden_size = 512, c.model.intermediate_size = 1408, c.model.num_layers = 8;
  c.model.num_heads = 8, c.model.num_kv_heads = 4;
  c.data.seq_len = 256, c.data.passkey.min_doc_len = 64, c.data.passkey.max_doc_len = 256;
  c.train.steps = 1, c.train.global_batch_tokens = 512, c.train.threads = 1, c.train.precision = Precision::fp32;
  c.parallel.tp = 2, c.parallel.pp = 2, c.parallel.zero = 1;
  c.eval.at_end = false, c.log.interval = 1;
  int world = 1, rank = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  LT_CHECK(world == 8, "lt_bench_resume runs on 8 ranks (mpirun -np 8)");
  if (rank == 0) std::filesystem::remove_all(dir);  // each run writes its own checkpoint
  MPI_Barrier(MPI_COMM_WORLD);
  Mesh mesh(Layout(resolve_degrees(c, world)), MPI_COMM_WORLD, 600);
  Trainer trainer(c, &mesh);
  trainer.run();
  const std::string checkpoint = resolve_checkpoint(c.checkpoint_dir());
  report("tp2 pp2 dp2 zero1, the layout that wrote it", rank, trainer.model(), trainer.optimizer(), checkpoint);
  MPI_Barrier(MPI_COMM_WORLD);
  {
    Config other = c;
    other.parallel.tp = 4, other.parallel.zero = 0;
    Mesh resharded(Layout(resolve_degrees(other, world)), MPI_COMM_WORLD, 600);
    auto part = build_rank_model(other, resharded).model;
    AdamW optimizer(named(*part), {});
    report("tp4 pp2 (resharded)", rank, *part, optimizer, checkpoint);
  }
  MPI_Barrier(MPI_COMM_WORLD);
  if (rank == 0) {
    LlamaForCausalLM whole(c.model);
    AdamW optimizer(named(*whole), {});
    report("one rank, the whole model (resharded)", rank, *whole, optimizer, checkpoint);
  }
  MPI_Barrier(MPI_COMM_WORLD);
}

}  // namespace
}  // namespace lt

int main(int argc, char** argv) {
  return lt::bench::main(argc, argv, "lt_bench_resume", [&] {
    LT_CHECK(argc == 2, "usage: mpirun -np 8 lt_bench_resume DIR");
    lt::run(argv[1]);
  });
}
