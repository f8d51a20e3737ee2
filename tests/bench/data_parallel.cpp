// Data-parallel communication, as ratios measured in one invocation:
//  1. a training step (forward, backward, gradient reduction) with bucket
//     reductions started during backward vs. all of them after it;
//  2. the communicator's all_reduce and all_to_all vs. the plain MPI calls of
//     the same size (the overhead of our layer: the hop to the
//     communicator's worker thread, the watchdog's polling, counters).
// Rank 0 prints one JSON object per measurement.
//
// usage: mpirun -np 2 lt_bench_dp [STEPS]
#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <thread>

#include "core/data/batch.h"
#include "core/model/llama.h"
#include "core/model/loss.h"
#include "parallel/data_parallel/parameter_state.h"
#include "parallel/mesh/mesh.h"

namespace lt {
namespace {

using clock_type = std::chrono::steady_clock;

double since(clock_type::time_point start) { return std::chrono::duration<double>(clock_type::now() - start).count(); }

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// The slowest rank's time is the step's time.
double job_time(Communicator& world, double seconds) {
  auto t = at::tensor({seconds}, at::kDouble);
  world.all_reduce(t, ReduceOp::max);
  return t.item<double>();
}

void print(Communicator& world, const nlohmann::ordered_json& record) {
  if (world.rank() == 0) std::printf("%s\n", record.dump().c_str());
}

void bench_overlap(Communicator& world, int64_t steps) {
  // Gradients (~26 MB) large against the compute of a short micro-batch, as
  // in long-context training with many ranks per model replica.
  ModelConfig m;
  m.hidden_size = 256, m.num_layers = 4, m.num_heads = m.num_kv_heads = 4, m.intermediate_size = 768;
  m.vocab_size = 8192;
  const int64_t seq = 256;
  LlamaForCausalLM model(m);
  model->initialize(1);
  std::vector<NamedParameter> params;
  int64_t parameters = 0;
  for (auto& item : model->named_parameters())
    params.push_back({item.key(), item.value()}), parameters += item.value().numel();
  at::manual_seed(world.rank());
  auto tokens = at::randint(m.vocab_size, {2, seq + 1}, at::kLong);
  Batch batch{tokens.narrow(1, 0, seq).contiguous(),
              tokens.narrow(1, 1, seq).contiguous(),
              at::arange(seq, at::kLong).repeat({2, 1}),
              at::Tensor(),
              at::Tensor(),
              nullptr};
  std::map<bool, std::vector<double>> times;
  for (bool overlap : {false, true}) {
    StateOptions options;
    options.bucket_bytes = 4 << 20, options.overlap = overlap;
    ParameterState state(params, world, options, model->shard().handoff);
    for (int64_t s = 0; s <= steps; ++s) {  // step 0 warms up
      world.barrier();
      const auto start = clock_type::now();
      state.zero_grad();
      for (int64_t row = 0; row < batch.size(); ++row) {
        state.begin_backward(row + 1 == batch.size());
        (loss_sum(*model, batch.rows(row, 1)) / (2.0 * seq)).backward();
        state.end_backward();
      }
      state.finish();
      const double t = job_time(world, since(start));
      if (s > 0) times[overlap].push_back(t);
    }
  }
  print(world, {{"bench", "gradient_overlap"},
                {"ranks", world.size()},
                {"parameters", parameters},
                {"gradient_bytes", parameters * 4},
                {"tokens_per_rank", batch.tokens.numel()},
                {"after_backward_s", median(times[false])},
                {"overlapped_s", median(times[true])},
                {"speedup", median(times[false]) / median(times[true])}});
}

// Alternates ours and plain MPI, so both see the same machine noise.
template <class Ours, class Plain>
void bench_call(Communicator& world, const char* op, int64_t bytes, int repeats, Ours&& ours, Plain&& plain) {
  std::vector<double> a, b;
  for (int i = 0; i <= repeats; ++i) {
    world.barrier();
    auto start = clock_type::now();
    ours();
    const double t_ours = job_time(world, since(start));
    world.barrier();
    start = clock_type::now();
    plain();
    const double t_plain = job_time(world, since(start));
    if (i > 0) a.push_back(t_ours), b.push_back(t_plain);
  }
  print(world, {{"bench", "communicator_overhead"},
                {"op", op},
                {"ranks", world.size()},
                {"bytes", bytes},
                {"communicator_s", median(a)},
                {"plain_mpi_s", median(b)},
                {"overhead", median(a) / median(b)}});
}

void bench_communicator(Communicator& world) {
  const int P = world.size();
  for (int64_t bytes : {int64_t{64} << 10, int64_t{4} << 20, int64_t{64} << 20}) {
    const int64_t n = bytes / 4 / P * P;
    const int repeats = bytes > (8 << 20) ? 10 : 50;
    auto ours = at::ones({n}), plain = at::ones({n});
    bench_call(
        world, "all_reduce", n * 4, repeats, [&] { world.all_reduce(ours); },
        [&] { MPI_Allreduce(MPI_IN_PLACE, plain.data_ptr(), n, MPI_FLOAT, MPI_SUM, world.mpi()); });
    // Ours returns a new tensor: the plain call gets a new buffer too.
    bench_call(
        world, "all_to_all", n * 4, repeats, [&] { (void)world.all_to_all(ours); },
        [&] {
          auto out = at::empty({n});
          MPI_Alltoall(plain.data_ptr(), n / P, MPI_FLOAT, out.data_ptr(), n / P, MPI_FLOAT, world.mpi());
        });
  }
}

}  // namespace
}  // namespace lt

int main(int argc, char** argv) {
  lt::MpiSession mpi(&argc, &argv);
  const int64_t steps = argc > 1 ? std::atoll(argv[1]) : 5;
  MPI_Comm comm;
  MPI_Comm_dup(MPI_COMM_WORLD, &comm);
  lt::Communicator world(comm, "world", 600);
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  at::set_num_threads(std::max(1, cores / world.size()));
  lt::bench_overlap(world, steps);
  lt::bench_communicator(world);
  return 0;
}
