// What the benchmarks share: the best time of repeated runs, a random batch
// (packed documents too), and a main that sets up MPI and threads and turns an error
// into one line and exit 1.
#pragma once
#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>

#include "core/data/batch.h"
#include "core/util/resources.h"
#include "parallel/mesh/mesh.h"

namespace lt::bench {

// The least seconds of `repeats` runs of `run`, after `warmups` untimed ones.
inline double best_of(int repeats, const std::function<void()>& run, int warmups = 1) {
  for (int i = 0; i < warmups; ++i) run();
  double best = 1e30;
  for (int i = 0; i < repeats; ++i) {
    const auto start = std::chrono::steady_clock::now();
    run();
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  return best;
}

// `rows` sequences of `seq` random tokens below `vocab` (seed 0), no documents.
inline Batch random_batch(int64_t seq, int64_t vocab, int64_t rows = 1) {
  at::manual_seed(0);
  auto tokens = at::randint(vocab, {rows, seq + 1}, at::kLong);
  return {tokens.narrow(1, 0, seq).contiguous(),
          tokens.narrow(1, 1, seq).contiguous(),
          at::arange(seq, at::kLong).expand({rows, seq}).contiguous(),
          at::Tensor(),
          at::Tensor(),
          nullptr};
}

// Packs `batch`'s one row with five documents, of 1/2, 1/4, 1/8, 1/16 and
// 1/16 of it, their spans found on the host, as the packer does.
inline void pack_documents(Batch& batch) {
  const int64_t seq = batch.tokens.size(1);
  batch.documents = at::zeros({1, seq}, at::kLong);
  for (int64_t part = 2; part <= 16; part *= 2) batch.documents.narrow(1, seq - seq / part, seq / part).add_(1);
  batch.spans = document_spans(batch.documents);
}

// Runs `body` in an MPI session with every core's threads.
inline int main(int& argc, char**& argv, const char* name, const std::function<void()>& body) {
  MpiSession mpi(&argc, &argv);
  at::set_num_threads(static_cast<int>(default_threads(0)));
  try {
    body();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: %s\n", name, e.what());
    return 1;
  }
  return 0;
}

}  // namespace lt::bench
