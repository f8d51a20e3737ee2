// Sequence parallelism against one rank on the same data and init: the loss
// and every gradient (fp32, 1e-5 relative), for Ulysses over all ranks and,
// on 4 ranks, Ulysses 2 x dp 2; plain causal sequences, packed documents, and
// GQA with fewer kv heads than ranks. The all-to-all volume per layer equals
// the theory exactly. Whole training runs equal one process.
#include <gtest/gtest.h>

#include "core/data/document_source.h"
#include "core/data/packer.h"
#include "core/train/loss.h"
#include "core/train/trainer.h"
#include "parallel/mesh/mesh.h"
#include "parallel/sequence/sequence_shard.h"
#include "parallel/sequence/ulysses_attention.h"
#include "tests/support/reference.h"

namespace lt {
namespace {

int world_size() {
  int world = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  return world;
}

struct Case {
  const char* name;
  bool documents;
  int64_t kv_heads;
};

void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

class UlyssesJob : public ::testing::TestWithParam<Case> {};

// 2 sequences per dp rank of 64 tokens; tiny model with 4 heads.
Config case_config(const Case& c, int ulysses, int dp) {
  Config config = testing::tiny_run("", 1);
  config.model.num_kv_heads = c.kv_heads;
  config.data.document_mask = c.documents;
  config.train.global_batch_tokens = 2 * dp * config.data.seq_len;
  config.parallel.sp.ulysses = ulysses;
  config.parallel.dp = std::to_string(dp);
  return config;
}

void expect_equal_to_one_rank(const Case& c, int ulysses, int dp) {
  const Config config = case_config(c, ulysses, dp);
  Mesh mesh(Layout(resolve_degrees(config, world_size())), MPI_COMM_WORLD, 60);
  auto source = make_document_source(config.data, config.model.vocab_size, 5, Split::Train);
  Packer packer(*source, config.data);
  const Batch batch = packer.next(2 * dp, config.data.seq_len);
  const double valid = static_cast<double>(batch.valid_tokens());

  LlamaForCausalLM serial(config.model), parallel(config.model);
  serial->initialize(3);
  parallel->initialize(3);
  auto serial_loss = loss_sum(*serial, batch) / valid;
  serial_loss.backward();

  parallel->set_attention(ulysses_attention(mesh.group(Group::ulysses)));
  const auto coord = mesh.coord();
  const Batch rows = batch.rows(coord.dp * 2, 2);
  const Batch mine = shard_sequences(rows, sequence_columns(batch.tokens.size(1), {ulysses, 1}, coord.ulysses, 0));
  auto loss = loss_sum(*parallel, mine) / valid;
  loss.backward();

  auto& replicas = mesh.group(Group::dp_sp);
  auto total = loss.detach().reshape({1}).clone();
  replicas.all_reduce(total);
  EXPECT_NEAR(total.item<double>(), serial_loss.item<double>(), 1e-5 * serial_loss.item<double>());
  auto reference = serial->named_parameters();
  for (auto& item : parallel->named_parameters()) {
    auto grad = item.value().grad().contiguous();
    replicas.all_reduce(grad);
    EXPECT_LT(testing::relative_error(grad, reference[item.key()].grad()), 1e-5) << item.key();
  }
}

TEST_P(UlyssesJob, OverAllRanksEqualsOneRank) { expect_equal_to_one_rank(GetParam(), world_size(), 1); }

TEST_P(UlyssesJob, WithDataParallelEqualsOneRank) {
  if (world_size() != 4) GTEST_SKIP() << "Ulysses 2 x dp 2 needs 4 ranks";
  expect_equal_to_one_rank(GetParam(), 2, 2);
}

INSTANTIATE_TEST_SUITE_P(Sequences, UlyssesJob,
                         ::testing::Values(Case{"causal", false, 4}, Case{"documents", true, 4},
                                           Case{"gqa", true, 2}, Case{"mqa", true, 1}),
                         [](const auto& info) { return std::string(info.param.name); });

// One layer's forward: the all-to-all bytes of each rank equal the theory.
TEST(Ulysses, AllToAllVolumeEqualsTheory) {
  const int P = world_size();
  for (int64_t kv_heads : {4, 1}) {
    MPI_Comm comm;
    MPI_Comm_dup(MPI_COMM_WORLD, &comm);
    Communicator group(comm, "ulysses", 60);
    const int64_t b = 2, s = 16, heads = 4, d = 8;
    auto q = at::randn({b, s, heads, d}), k = at::randn({b, s, kv_heads, d}), v = at::randn({b, s, kv_heads, d});
    AttentionMask mask;
    mask.q_index = mask.k_index = at::arange(group.rank() * s, (group.rank() + 1) * s, at::kLong);
    ulysses_attention(group)(q, k, v, mask, {});
    EXPECT_EQ(group.counters().at("all_to_all").bytes, ulysses_forward_bytes(b, s, heads, kv_heads, d, P, 4))
        << "kv heads " << kv_heads;
    EXPECT_EQ(group.counters().at("all_to_all").calls, 2);  // q, k, v fused; the output back
  }
}

TEST(Ulysses, TrainingEqualsOneProcess) {
  const int P = world_size();
  MPI_Comm comm;
  MPI_Comm_dup(MPI_COMM_WORLD, &comm);
  Communicator world(comm, "test", 60);
  const std::string dir = world.all_gather(world.rank() == 0 ? testing::scratch_dir("sp_test", "train") : "")[0];
  Config config = testing::tiny_run(dir + "/sp", 3);
  config.model.num_kv_heads = 2;
  config.parallel.sp.ulysses = P;
  Mesh mesh(Layout(resolve_degrees(config, P)), MPI_COMM_WORLD, 60);
  const auto parallel = Trainer(config, &mesh).run().losses;
  Config alone = config;
  alone.parallel.sp.ulysses = 1;
  alone.run_dir = dir + "/alone" + std::to_string(world.rank());
  const auto serial = Trainer(alone).run().losses;
  ASSERT_EQ(parallel.size(), serial.size());
  for (const auto& [step, loss] : parallel) EXPECT_NEAR(loss, serial.at(step), 1e-5 * loss) << "step " << step;
}

}  // namespace
}  // namespace lt
