// Naive, obviously-correct references the tests compare the engine against.
#pragma once
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "core/config/config.h"
#include "core/data/batch.h"
#include "core/model/model_shard.h"
#include "parallel/comm/communicator.h"

namespace lt::testing {

// softmax(q k^T / sqrt(d) + mask) v with an explicit [sq, sk] matrix; q, k, v
// [batch, seq, heads, head_dim] with equal heads; visible [batch, sq, sk] bool.
// Returns out [b, sq, h, d] and lse [b, h, sq].
std::pair<at::Tensor, at::Tensor> naive_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                  const at::Tensor& visible);

// visible[b, i, j] = (k_index[j] <= q_index[i]) && same document.
at::Tensor visibility(const at::Tensor& q_index, const at::Tensor& k_index, const at::Tensor& q_doc,
                      const at::Tensor& k_doc);

// The Llama forward written out from the formulas, over a map of HF-named weights.
at::Tensor naive_llama_logits(const ModelConfig& config, const std::map<std::string, at::Tensor>& weights,
                              const at::Tensor& tokens, const at::Tensor& positions, const at::Tensor& documents);

// Relative error ||a - b|| / max(||b||, tiny).
double relative_error(const at::Tensor& a, const at::Tensor& b);

// A CUDA device is visible: the Cuda* tests run, else they skip.
bool has_cuda();

// <a, b> / (||a|| ||b||), in fp64; 1 when both are zero.
double cosine(const at::Tensor& a, const at::Tensor& b);

// How near a parallel run must come to one rank computing in the same
// precision: fp32, the loss and every gradient within 1e-5 relative; bf16
// (issue 19), the loss within 5e-3 relative and every gradient at cosine
// similarity >= 0.999 (the summation order differs, and bf16 rounds each
// sum).
struct Agreement {
  double loss, gradient, cosine;
};
Agreement agreement(const std::string& precision);
::testing::AssertionResult losses_agree(double got, double expected, const Agreement& a);
::testing::AssertionResult gradients_agree(const at::Tensor& got, const at::Tensor& expected, const Agreement& a);

// The shard of a whole model that computes in `precision` (bf16: with
// compute weights), for tests that build models without a trainer.
ModelShard precision_shard(const std::string& precision);

// A small, fast model config for tests.
ModelConfig tiny_model(bool tied = false, bool bias = false);

// An empty scratch directory <tmp>/lt_<suite>_<pid>/<name>.
std::string scratch_dir(const std::string& suite, const std::string& name);

// One scratch directory for every rank of `job`: rank 0 names it.
std::string shared_scratch_dir(Communicator& job, const std::string& suite, const std::string& name);

// Ranks in MPI_COMM_WORLD (the multi-rank tests' job).
int world_size();

// Initialises MPI for the life of the test program unless it already is
// (the trainer runs every process as a mesh, of one rank if need be).
void ensure_mpi();

// The first global batch of `c`'s training data, drawn with `seed`.
Batch first_batch(const Config& c, uint64_t seed);

// A few-second training run of tiny_model on 64-token passkey sequences
// (4 a step), one thread, no evaluation, fp32, writing into run_dir.
// Ensures MPI.
Config tiny_run(const std::string& run_dir, int64_t steps);

// Writes `text` to `path` as it is (no error check: a test reads it back).
void write_text(const std::string& path, const std::string& text);

// Runs `body`, expecting one line of lt::Error that holds every fragment
// and quotes no hostile value whole (under 1000 characters).
void expect_error(const std::function<void()>& body, const std::vector<std::string>& fragments);

// Before every test, puts LibTorch's process state that tests change back as
// a fresh process has it: the default generator's seed and the intra-op
// threads. The unit tests run many to a process (ctest's shards) and the
// multi-rank tests all in one; a test's random draws, on which its
// tolerances were set, must not depend on which tests ran before it.
class FreshProcessState : public ::testing::EmptyTestEventListener {
 public:
  FreshProcessState();
  void OnTestStart(const ::testing::TestInfo&) override;

 private:
  int threads_;
};

}  // namespace lt::testing
