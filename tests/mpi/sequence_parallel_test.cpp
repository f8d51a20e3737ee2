// Sequence parallelism against one rank on the same data and init: the loss
// and every gradient (fp32, 1e-5 relative; bf16 against one rank in bf16,
// testing::agreement), for Ulysses and ring (zigzag and
// contiguous) over all ranks and, on 4 ranks, the 2 x 2 hybrid and each with
// dp 2; plain causal sequences, packed documents, GQA/MQA with fewer kv heads
// than ranks, and head counts the Ulysses ranks do not divide. Per-layer volumes equal the theory exactly; zigzag
// balances causal work. Whole training runs equal one process.
#include <gtest/gtest.h>

#include "core/data/document_source.h"
#include "core/data/packer.h"
#include "core/model/loss.h"
#include "train/trainer.h"
#include "parallel/mesh/mesh.h"
#include "parallel/sequence/ring_attention.h"
#include "parallel/sequence/sequence_parallel.h"
#include "parallel/sequence/ulysses_attention.h"
#include "tests/support/reference.h"

namespace lt {
namespace {

struct Case {
  const char* name;
  bool documents;
  int64_t kv_heads;
  int64_t heads = 4;
  const char* precision = "fp32";  // bf16: q, k, v and the ring's K/V blocks travel in bf16
  // blockwise: the ring's masked path, where no fused kernel runs (fp32 on CUDA)
  AttentionKernel kernel = AttentionKernel::automatic;
};

void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

struct Arrangement {
  SequenceLayout sp;
  int dp;
  std::string describe() const {
    return "ulysses " + std::to_string(sp.ulysses) + " x ring " + std::to_string(sp.ring) +
           (sp.zigzag ? " zigzag" : " contiguous") + " x dp " + std::to_string(dp);
  }
};

// Every way to split this job's ranks that the test covers.
std::vector<Arrangement> arrangements(int P) {
  std::vector<Arrangement> out = {{{P, 1, true}, 1}, {{1, P, true}, 1}, {{1, P, false}, 1}};
  if (P == 4) {
    out.push_back({{2, 2, true}, 1});  // the hybrid: Ulysses inside, ring outside
    out.push_back({{2, 1, true}, 2});  // with data parallelism
    out.push_back({{1, 2, true}, 2});
  }
  return out;
}

class SequenceJob : public ::testing::TestWithParam<Case> {};

// 2 sequences per dp rank of 64 tokens; tiny model with 4 heads.
Config case_config(const Case& c, const Arrangement& split) {
  Config config = testing::tiny_run("", 1);
  config.model.num_kv_heads = c.kv_heads;
  config.model.num_heads = c.heads;
  config.model.hidden_size = 8 * c.heads;
  config.data.document_mask = c.documents;
  config.model.attention = c.kernel;
  config.train.global_batch_tokens = 2 * split.dp * config.data.seq_len;
  config.parallel.sp = {split.sp.ulysses, split.sp.ring, split.sp.zigzag};
  config.parallel.dp = std::to_string(split.dp);
  config.parallel.emulate_nccl = true;  // ring and Ulysses in NCCL's order
  return config;
}

void expect_equal_to_one_rank(const Case& c, const Arrangement& split) {
  SCOPED_TRACE(split.describe());
  const Config config = case_config(c, split);
  Mesh mesh(Layout(resolve_degrees(config, testing::world_size())), MPI_COMM_WORLD, 60, device_transport(config));
  mesh.enable_device(at::kCPU);
  ASSERT_EQ(mesh.group(Group::sp).transport(), DeviceTransport::emulated_nccl);
  auto source = make_document_source(config.data, config.model.vocab_size, 5, Split::Train);
  Packer packer(*source, config.data);
  const Batch batch = packer.next(2 * split.dp, config.data.seq_len);
  const double valid = static_cast<double>(batch.valid_tokens());

  const auto agreement = testing::agreement(c.precision);
  LlamaForCausalLM serial(config.model, testing::precision_shard(c.precision)),
      parallel(config.model, testing::precision_shard(c.precision));
  serial->initialize(3);
  parallel->initialize(3);
  auto serial_loss = loss_sum(*serial, batch) / valid;
  serial_loss.backward();

  parallel->set_attention(sequence_parallel_attention(mesh));
  const auto coord = mesh.coord();
  const Batch rows = batch.rows(coord.dp * 2, 2);
  const auto columns = sequence_columns(batch.tokens.size(1), split.sp, coord.ulysses, coord.ring);
  auto loss = loss_sum(*parallel, shard_sequences(rows, columns)) / valid;
  loss.backward();

  auto& replicas = mesh.group(Group::dp_sp);
  auto total = loss.detach().reshape({1}).clone();
  replicas.all_reduce(total);
  EXPECT_TRUE(testing::losses_agree(total.item<double>(), serial_loss.item<double>(), agreement));
  auto reference = serial->named_parameters();
  for (auto& item : parallel->named_parameters()) {
    auto grad = item.value().grad().contiguous();
    replicas.all_reduce(grad);
    EXPECT_TRUE(testing::gradients_agree(grad, reference[item.key()].grad(), agreement)) << item.key();
  }
}

TEST_P(SequenceJob, EveryLayoutEqualsOneRank) {
  for (const auto& split : arrangements(testing::world_size())) expect_equal_to_one_rank(GetParam(), split);
}

INSTANTIATE_TEST_SUITE_P(Sequences, SequenceJob,
                         ::testing::Values(Case{"causal", false, 4}, Case{"gqa_causal", false, 2},
                                           Case{"gqa_causal_bf16", false, 2, 4, "bf16"},  // the ring's fused calls
                                           Case{"documents", true, 4}, Case{"gqa", true, 2}, Case{"mqa", true, 1},
                                           Case{"six_heads", true, 2, 6},  // uneven over 4 Ulysses ranks
                                           Case{"documents_bf16", true, 4, 4, "bf16"},
                                           Case{"gqa_bf16", true, 2, 4, "bf16"},
                                           Case{"gqa_blockwise", true, 2, 4, "fp32", AttentionKernel::blockwise}),
                         [](const auto& info) { return std::string(info.param.name); });

// Zigzag gives every ring rank the same causal work (query-key pairs).
TEST(SequenceShard, ZigzagBalancesCausalWork) {
  for (bool zigzag : {true, false}) {
    std::vector<int64_t> work;
    for (int r = 0; r < 4; ++r) work.push_back((sequence_columns(64, {1, 4, zigzag}, 0, r) + 1).sum().item<int64_t>());
    if (zigzag) {
      EXPECT_EQ(work, std::vector<int64_t>(4, work[0]));
    } else EXPECT_LT(work[0] * 4, work[3]);
  }
  // Ulysses inside a zigzag ring part: contiguous pieces of it, in order.
  // Ring rank 0 of 2 holds chunks 0 and 3 of 4: [0, 4) and [12, 16); Ulysses rank 1 the second half.
  EXPECT_TRUE(sequence_columns(16, {2, 2, true}, 1, 0).equal(at::arange(12, 16, at::kLong)));
  EXPECT_TRUE(sequence_columns(16, {2, 2, true}, 0, 1).equal(at::arange(4, 8, at::kLong)));
}

// One layer's forward: the all-to-all bytes of each rank equal the theory,
// in fp32 and (half of them) in bf16.
TEST(Ulysses, AllToAllVolumeEqualsTheory) {
  const int P = testing::world_size();
  for (auto dtype : {at::kFloat, at::kBFloat16})
    for (int64_t kv_heads : {4, 1}) {
      MPI_Comm comm;
      MPI_Comm_dup(MPI_COMM_WORLD, &comm);
      Communicator group(comm, "ulysses", 60);
      const int64_t b = 2, s = 16, heads = 4, d = 8;
      auto randn = [&](int64_t h) { return at::randn({b, s, h, d}).to(dtype); };
      auto q = randn(heads), k = randn(kv_heads), v = randn(kv_heads);
      AttentionMask mask;
      mask.q_index = mask.k_index = at::arange(group.rank() * s, (group.rank() + 1) * s, at::kLong);
      ulysses_attention(group)(q, k, v, mask, {});
      EXPECT_EQ(group.counters().at("all_to_all").bytes,
                ulysses_forward_bytes(b, s, heads, kv_heads, d, P, c10::elementSize(dtype)))
          << "kv heads " << kv_heads << ", " << dtype;
      EXPECT_EQ(group.counters().at("all_to_all").calls, 2);  // q, k, v fused; the output back
    }
}

// One layer's forward: each rank sends R - 1 hops of its K/V block (kv
// heads only), indices and document ids: exactly the theory.
TEST(Ring, SendVolumeEqualsTheory) {
  const int P = testing::world_size();
  for (auto dtype : {at::kFloat, at::kBFloat16})
    for (bool documents : {false, true}) {
      MPI_Comm comm;
      MPI_Comm_dup(MPI_COMM_WORLD, &comm);
      Communicator group(comm, "ring", 60);
      const int64_t b = 2, s = 16, heads = 4, kv_heads = 2, d = 8;
      auto randn = [&](int64_t h) { return at::randn({b, s, h, d}).to(dtype); };
      auto q = randn(heads), k = randn(kv_heads), v = randn(kv_heads);
      AttentionMask mask;
      mask.q_index = mask.k_index = sequence_columns(s * P, {1, P, true}, 0, group.rank());
      if (documents) mask.q_document = mask.k_document = at::zeros({b, s}, at::kLong);
      ring_attention(group)(q, k, v, mask, {});
      EXPECT_EQ(group.counters().at("send").bytes,
                ring_forward_bytes(b, s, kv_heads, d, P, c10::elementSize(dtype), documents))
          << dtype;
    }
}

// Whole runs through the trainer, on sequences of 61 tokens: the trainer
// pads them (ignored labels) to split over the ranks; the losses are those
// of one process on the unpadded sequences.
TEST(SequenceParallel, TrainingEqualsOneProcess) {
  const int P = testing::world_size();
  MPI_Comm comm;
  MPI_Comm_dup(MPI_COMM_WORLD, &comm);
  Communicator world(comm, "test", 60);
  const std::string dir = testing::shared_scratch_dir(world, "sp_test", "train");
  for (bool ring : {false, true}) {
    Config config = testing::tiny_run(dir + (ring ? "/ring" : "/ulysses"), 3);
    config.model.num_kv_heads = 2;
    config.data.seq_len = 61;
    config.train.global_batch_tokens = 4 * 61;
    (ring ? config.parallel.sp.ring : config.parallel.sp.ulysses) = P;
    config.parallel.emulate_nccl = true;
    Mesh mesh(Layout(resolve_degrees(config, P)), MPI_COMM_WORLD, 60, device_transport(config));
    ASSERT_EQ(mesh.group(Group::sp).transport(), DeviceTransport::emulated_nccl);
    const auto parallel = Trainer(config, &mesh).run().losses;
    Config alone = config;
    alone.parallel.sp = {};
    alone.run_dir = config.run_dir + "_alone" + std::to_string(world.rank());
    const auto serial = Trainer(alone).run().losses;
    ASSERT_EQ(parallel.size(), serial.size());
    for (const auto& [step, loss] : parallel)
      EXPECT_NEAR(loss, serial.at(step), 1e-5 * loss) << (ring ? "ring" : "ulysses") << " step " << step;
  }
}

}  // namespace
}  // namespace lt
