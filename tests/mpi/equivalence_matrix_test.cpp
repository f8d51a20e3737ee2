// The regimes of real runs against one rank, all pairs: every pair of
// values of any two factors below (layout, ZeRO, reduce dtype, overlap,
// micro-batches, MLP and loss tiles, checkpointing, activation offload,
// offloaded chunks, persistent chunks, bucket size) trains together in
// some case, each case two steps of the same model on the same data on N
// ranks and on one (`longtrain check`'s comparison: the loss and every
// gradient, fp32 within 1e-5, bf16 at issue 19's tolerances). The design
// is generated, skipping only what the config refuses; each case proves
// that its regime occurs (a chunk of two layers, a weight larger than its
// bucket, tiles that split), so a later change of defaults cannot turn it
// back into toy shapes. Cases of 2 ranks run under -np 2, the 4-rank mix
// under -np 4. Also the two reproductions, as they were found.
#include <gtest/gtest.h>

#include <fstream>
#include <iostream>
#include <map>
#include <set>
#include <tuple>

#include "core/model/model_size.h"
#include "core/util/error.h"
#include "offload/activations/tiling.h"
#include "tests/support/all_pairs.h"
#include "tests/support/reference.h"
#include "train/equivalence_check.h"
#include "train/trainer.h"

namespace lt {
namespace {

using testing::Factor;
using testing::Row;

const std::vector<Factor> kFactors = {
    {"layout", {"dp2", "ulysses2", "ring2", "tp2", "pp2", "pp2_ulysses2"}},
    {"zero", {"0", "1", "2", "3"}},
    {"reduce", {"fp32", "bf16"}},
    {"overlap", {"on", "off"}},
    {"micro_batches", {"1", "2"}},
    {"mlp_tiles", {"1", "2"}},
    {"loss_tiles", {"1", "2"}},
    {"checkpoint", {"none", "full", "every2"}},
    {"activation_offload", {"off", "on"}},
    {"chunks", {"off", "1_layer", "2_layers", "all_layers"}},
    {"n_persist", {"0", "1"}},
    {"bucket", {"small", "large"}},
};

constexpr int64_t kSequences = 4, kSeqLen = 64, kLayers = 4;
constexpr double kSmallBucketMb = 0.002, kLargeBucketMb = 100;

// The model and data every case trains: tests' tiny model with 4 layers.
std::string base_recipe() {
  static const std::string path = [] {
    const std::string dir = testing::scratch_dir("EquivalenceMatrix", "recipe");
    std::ofstream(dir + "/base.yaml") << "run_dir: " << dir << "/run\n"
                                      << "model: {vocab_size: 96, hidden_size: 32, intermediate_size: 64, num_layers: "
                                      << kLayers << ", num_heads: 4, num_kv_heads: 2, init_std: 0.1, "
                                      << "attention_block: 16}\n"
                                      << "data: {seq_len: " << kSeqLen
                                      << ", passkey: {min_doc_len: 40, max_doc_len: 90, digits: 3}}\n"
                                      << "train: {steps: 2, global_batch_tokens: " << kSequences * kSeqLen
                                      << ", lr: 1.0e-3, eps: 1.0e-6, warmup_steps: 0, threads: 1}\n"
                                      << "parallel: {timeout_s: 120}\n"
                                      << "eval: {at_end: false}\n";
    return dir + "/base.yaml";
  }();
  return path;
}

int ranks_of(const std::string& layout) { return layout == "pp2_ulysses2" ? 4 : 2; }

std::vector<std::string> overrides(const Row& row) {
  auto value = [&](size_t f) { return kFactors[f].values[row[f]]; };
  std::vector<std::string> o;
  const std::string layout = value(0);
  int64_t dp = 1;
  if (layout == "dp2") o.push_back("parallel.dp=2"), dp = 2;
  if (layout == "ulysses2") o.push_back("parallel.sp.ulysses=2");
  if (layout == "ring2") o.push_back("parallel.sp.ring=2");
  if (layout == "tp2") o.insert(o.end(), {"parallel.tp=2", "parallel.tp_sequence=true"});
  if (layout == "pp2") o.push_back("parallel.pp=2");
  if (layout == "pp2_ulysses2") o.insert(o.end(), {"parallel.pp=2", "parallel.sp.ulysses=2"});
  o.push_back("parallel.zero=" + value(1));
  const bool bf16 = value(2) == "bf16";
  o.push_back(std::string("train.precision=") + (bf16 ? "bf16" : "fp32"));
  if (bf16) o.push_back("parallel.reduce_dtype=bf16");
  o.push_back(std::string("parallel.overlap=") + (value(3) == "on" ? "true" : "false"));
  o.push_back("train.micro_batch_size=" + std::to_string(kSequences / dp / std::stoll(value(4))));
  o.push_back("memory.mlp_tiles=" + value(5));
  o.push_back("memory.loss_tiles=" + value(6));
  const std::string checkpoint = value(7);
  o.push_back(std::string("memory.checkpoint=") + (checkpoint == "none" ? "none" : "full"));
  o.push_back(std::string("memory.checkpoint_every=") + (checkpoint == "every2" ? "2" : "1"));
  o.push_back(std::string("memory.offload_activations=") + (value(8) == "on" ? "true" : "false"));
  const std::string chunks = value(9);
  o.push_back(std::string("memory.offload_model=") + (chunks == "off" ? "false" : "true"));
  o.push_back("memory.n_persist=" + value(10));
  o.push_back(std::string("parallel.bucket_mb=") +
              std::to_string(value(11) == "small" ? kSmallBucketMb : kLargeBucketMb));
  return o;
}

// The chunk size is the one override that depends on the others (the
// compute dtype's bytes).
Config config_of(const Row& row) {
  Config c = load_config(base_recipe(), overrides(row));
  const std::string chunks = kFactors[9].values[row[9]];
  if (chunks == "1_layer") c.memory.chunk_mb = chunk_mb_holding(c, 1.5);
  if (chunks == "2_layers") c.memory.chunk_mb = chunk_mb_holding(c, 2.5);
  if (chunks == "all_layers") c.memory.chunk_mb = chunk_mb_holding(c, kLayers + 0.5);
  return c;
}

bool valid(const Row& row) {
  try {
    config_of(row);
    return true;
  } catch (const Error&) {
    return false;
  }
}

// The case's regimes, seen in the job's trainer.
void expect_regimes(const Row& row, Trainer& job, const Config& c) {
  auto value = [&](size_t f) { return kFactors[f].values[row[f]]; };
  auto& model = job.model();
  int64_t largest = 0, total = 0;  // fp32 bytes of this rank's parameters (ZeRO-3 holds placeholders: their shapes)
  std::set<std::string> seen;
  for (const auto& s : job.segments())
    if (seen.insert(s.name).second) largest = std::max(largest, 4 * s.numel()), total += 4 * s.numel();
  const auto bucket = static_cast<int64_t>(c.parallel.bucket_mb * (1 << 20));
  if (value(11) == "small") {
    EXPECT_GT(largest, bucket) << "no weight is larger than its bucket";
  } else {
    EXPECT_LT(total, bucket) << "the model does not fit one bucket";
  }
  const int64_t local = kSeqLen / c.parallel.sp_degree();
  if (value(5) == "2") {
    EXPECT_EQ(tile_count(c.memory.mlp_tiles, local, c.model.hidden_size), 2);
  }
  if (value(6) == "2") {
    EXPECT_EQ(tile_count(c.memory.loss_tiles, local, c.model.hidden_size), 2);
  }
  const std::string chunks = value(9);
  if (chunks == "off") return;
  ASSERT_NE(job.chunks(), nullptr);
  std::map<int64_t, int64_t> layers_of_chunk;
  const auto& shard = model.shard();
  const int64_t stage_layers = shard.num_layers < 0 ? c.model.num_layers : shard.num_layers;
  for (int64_t l = shard.first_layer; l < shard.first_layer + stage_layers; ++l)
    ++layers_of_chunk[job.chunks()->chunk_of(l)];
  int64_t most = 0;
  for (const auto& [chunk, n] : layers_of_chunk) most = std::max(most, n);
  const int64_t want = chunks == "1_layer" ? 1 : chunks == "2_layers" ? 2 : stage_layers;
  EXPECT_EQ(most, std::min(want, stage_layers)) << "layers in the fullest chunk";
}

// bf16 numerics on any CPU: emulated where the CPU lacks bf16 instructions
// (slower, the same results), so that the design does not depend on the machine.
struct EquivalenceMatrix : ::testing::Test {
  EquivalenceMatrix() { setenv("LT_CPU_BF16", "1", 1); }
  ~EquivalenceMatrix() override { unsetenv("LT_CPU_BF16"); }
  int world = testing::world_size();
};

TEST_F(EquivalenceMatrix, AllPairsOfRegimesEqualOneRank) {
  const auto design = testing::all_pairs(kFactors, valid);
  int64_t run = 0;
  std::set<std::tuple<size_t, size_t, size_t, size_t>> covered;
  for (const auto& row : design.rows) {
    if (ranks_of(kFactors[0].values[row[0]]) != world) continue;
    const std::string name = testing::describe(kFactors, row);
    SCOPED_TRACE(name);
    const Config c = config_of(row);
    Mesh mesh(Layout(resolve_degrees(c, world)), MPI_COMM_WORLD, 120);
    const auto report = check_against_one_rank(c, mesh, 2, [&](Trainer& job) { expect_regimes(row, job, c); });
    EXPECT_TRUE(report.passed()) << describe(report);
    for (size_t i = 0; i < row.size(); ++i)
      for (size_t j = i + 1; j < row.size(); ++j) covered.insert({i, row[i], j, row[j]});
    ++run;
  }
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  if (rank == 0) {
    std::cout << "equivalence matrix: " << design.rows.size() << " cases cover all " << design.pairs
              << " pairs of factor values but " << design.refused.size() << " the config refuses; " << run
              << " cases on " << world << " ranks ran here, covering " << covered.size() << " pairs\n";
    for (const auto& r : design.refused) std::cout << "  refused: " << r << "\n";
  }
  EXPECT_GT(run, 0);
}

// The reproductions. A chunk of two layers never handed its
// gradients to the host (its count of gradient hooks was re-armed by each
// layer), and tiled weights handed theirs over once per tile; a weight larger
// than its bucket was reduced after its first tile's gradient.
TEST_F(EquivalenceMatrix, ReproductionsOfTheHandoffDefect) {
  if (world != 2) GTEST_SKIP() << "2-rank cases";
  for (const std::vector<std::string>& o : std::vector<std::vector<std::string>>{
           {"parallel.dp=2", "parallel.zero=0", "memory.mlp_tiles=2", "parallel.bucket_mb=0.01"},
           {"parallel.dp=2", "parallel.zero=1", "memory.mlp_tiles=2", "parallel.bucket_mb=0.01"},
           {"parallel.dp=2", "parallel.zero=1", "memory.mlp_tiles=2", "parallel.bucket_mb=0.01", "train.precision=bf16",
            "parallel.reduce_dtype=bf16"},
           {"parallel.dp=2", "memory.offload_model=true", "memory.checkpoint=full", "memory.chunk_mb=32"},
           {"parallel.dp=2", "memory.offload_model=true", "memory.checkpoint=full", "memory.chunk_mb=32",
            "memory.mlp_tiles=2", "memory.overlap_update=false"},
       }) {
    std::string name;
    for (const auto& s : o) name += s + " ";
    SCOPED_TRACE(name);
    std::vector<std::string> all = o;
    all.push_back("train.micro_batch_size=1");
    const Config c = load_config(base_recipe(), all);
    Mesh mesh(Layout(resolve_degrees(c, world)), MPI_COMM_WORLD, 120);
    const auto report = check_against_one_rank(c, mesh, 4, [&](Trainer& job) {
      if (c.memory.offload_model) {
        EXPECT_EQ(job.chunks()->chunk_count(), 1) << "every layer in one chunk";
      }
    });
    EXPECT_TRUE(report.passed()) << describe(report);
  }
}

// The families of issue 37 on every layout they allow, against one rank:
// Qwen3's q/k norms (per head: under tp and Ulysses each rank normalises
// the heads it holds, with no communication, and only the norms' gradients
// are summed over the ranks sharing them), and a Qwen3-MoE with a dense
// layer among its MoE layers (grouped expert products, global-batch
// balance, experts split by ep). Adaptive packing is not replayable by the
// comparison; tests/mpi/adaptive_sp_test.cpp covers it for dense models.
TEST_F(EquivalenceMatrix, QwenFamiliesOnEveryLayout) {
  // fp32 (1e-5): in bf16 a rounding flips some tokens' experts on one side only.
  const std::vector<std::string> qwen3 = {"train.precision=fp32", "model.family=qwen3", "model.qk_norm=true"};
  const std::vector<std::string> qwen3_moe = {"train.precision=fp32",      "model.family=qwen3_moe",
                                              "model.qk_norm=true",        "model.moe.experts=4",
                                              "model.moe.top_k=2",         "model.moe.expert_intermediate_size=32",
                                              "model.moe.dense_layers=[1]"};
  struct Case {
    std::vector<std::string> model, layout;
    int ranks;
  };
  const std::vector<std::string> chunks = {"parallel.dp=2", "memory.offload_model=true", "memory.checkpoint=full"};
  std::vector<Case> cases;
  for (const auto* model : {&qwen3, &qwen3_moe}) {
    for (const char* zero : {"0", "1", "2", "3"})
      cases.push_back({*model, {"parallel.dp=2", std::string("parallel.zero=") + zero}, 2});
    cases.push_back({*model, {"parallel.sp.ulysses=2"}, 2});
    cases.push_back({*model, {"parallel.sp.ring=2"}, 2});
    cases.push_back({*model, {"parallel.pp=2"}, 2});
    cases.push_back({*model, chunks, 2});
    cases.push_back({*model, {"parallel.sp.ulysses=2", "parallel.sp.ring=2"}, 4});
  }
  cases.push_back({qwen3, {"parallel.tp=2", "parallel.tp_sequence=true"}, 2});
  cases.push_back({qwen3_moe, {"parallel.dp=2", "parallel.ep=2"}, 2});
  cases.push_back({qwen3_moe, {"parallel.sp.ulysses=2", "parallel.dp=2", "parallel.ep=4"}, 4});
  int run = 0;
  for (const auto& [model, layout, ranks] : cases) {
    if (ranks != world) continue;
    std::vector<std::string> o = model;
    o.insert(o.end(), layout.begin(), layout.end());
    std::string name;
    for (const auto& s : o) name += s + " ";
    SCOPED_TRACE(name);
    Config c = load_config(base_recipe(), o);
    if (c.memory.offload_model) c.memory.chunk_mb = chunk_mb_holding(c, 2.5);
    Mesh mesh(Layout(resolve_degrees(c, world)), MPI_COMM_WORLD, 120);
    const auto report = check_against_one_rank(c, mesh, 2, [&](Trainer& job) {
      if (c.memory.offload_model) {
        EXPECT_LT(job.chunks()->chunk_count(), kLayers) << "chunks of several layers";
      }
      const auto params = job.model().named_parameters();
      EXPECT_TRUE(params.contains("model.layers." + std::to_string(job.model().shard().first_layer) +
                                  ".self_attn.q_norm.weight"));
      if (!c.model.moe.enabled()) return;
      if (job.model().shard().first_layer == 0) {
        // (under ZeRO-3 the parameter holds no values: its slice says which experts)
        const auto& shard = job.model().shard();
        const TensorSlice experts = job.model().slice_of("model.layers.0.mlp.experts.gate_up_proj");
        EXPECT_EQ(experts.full, 4);
        EXPECT_EQ(experts.offset, shard.ep_rank * 4 / c.parallel.ep) << "this rank's experts";
        EXPECT_EQ(shard.ep_size, c.parallel.ep);
        EXPECT_TRUE(params.contains("model.layers.1.mlp.up_proj.weight")) << "layer 1 is dense";
      }
    });
    EXPECT_TRUE(report.passed()) << describe(report);
    if (mesh.rank() == 0) std::cout << name << "\n" << describe(report);
    ++run;
  }
  EXPECT_GT(run, 0);
}

}  // namespace
}  // namespace lt
