// Host memory of a resume. 8 ranks (tp 2 x pp 2 x dp 2) write a checkpoint of
// a 56M-parameter Llama, then each reads its weights back from it, and one
// rank reads the whole model from the same files (the resharding path, which
// assembles each full tensor from the parts). Each reports the peak host
// memory its load added (VmHWM over the RSS before it: private copies and the
// file pages it touched) against the bytes of the weights it holds.
// Before, every rank copied every file holding part of a tensor it needed.
//
// usage: mpirun -np 8 lt_bench_resume DIR
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "core/checkpoint/checkpoint.h"
#include "core/train/trainer.h"
#include "core/util/error.h"
#include "parallel/mesh/layout.h"
#include "tests/bench/bench_support.h"

namespace lt {
namespace {

int64_t resident_bytes() {
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);)
    if (line.rfind("VmRSS:", 0) == 0) return std::stoll(line.substr(6)) * 1024;
  return 0;
}

int64_t weight_bytes(LlamaForCausalLMImpl& model) {
  int64_t bytes = 0;
  for (const auto& p : model.parameters()) bytes += p.numel() * p.element_size();
  return bytes;
}

// The peak host memory `load` adds, and the bytes the model holds.
void report(const char* layout, int rank, LlamaForCausalLMImpl& model, const std::string& checkpoint) {
  const at::Device cpu(at::kCPU);
  reset_peak_memory(cpu);
  const int64_t before = resident_bytes();
  load_checkpoint(checkpoint, model, nullptr, nullptr);
  const int64_t added = peak_memory_bytes(cpu) - before, held = weight_bytes(model);
  std::printf("{\"bench\": \"resume\", \"layout\": \"%s\", \"rank\": %d, \"held_bytes\": %lld, \"load_peak_bytes\": %lld, "
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
  c.train.steps = 1, c.train.global_batch_tokens = 512, c.train.threads = 1, c.train.precision = "fp32";
  c.parallel.tp = 2, c.parallel.pp = 2;
  c.eval.at_end = false, c.log.interval = 1;
  int world = 1, rank = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  check(world == 8, "lt_bench_resume runs on 8 ranks (mpirun -np 8)");
  if (rank == 0) std::filesystem::remove_all(dir);  // each run writes its own checkpoint
  MPI_Barrier(MPI_COMM_WORLD);
  Mesh mesh(Layout(resolve_degrees(c, world)), MPI_COMM_WORLD, 600);
  Trainer trainer(c, &mesh);
  trainer.run();
  const std::string checkpoint = resolve_checkpoint(c.checkpoint_dir());
  report("tp2 pp2 dp2, the layout that wrote it", rank, trainer.model(), checkpoint);
  MPI_Barrier(MPI_COMM_WORLD);
  if (rank == 0) {
    LlamaForCausalLM whole(c.model);
    report("one rank, the whole model (resharded)", rank, *whole, checkpoint);
  }
  MPI_Barrier(MPI_COMM_WORLD);
}

}  // namespace
}  // namespace lt

int main(int argc, char** argv) {
  return lt::bench::main(argc, argv, "lt_bench_resume", [&] {
    lt::check(argc == 2, "usage: mpirun -np 8 lt_bench_resume DIR");
    lt::run(argv[1]);
  });
}
