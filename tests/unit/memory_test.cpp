// Activation memory features against the plain run: checkpointing (full,
// every k-th layer, attention or MLP only), the tiled MLP, the tiled loss and
// offloaded inputs each give the same loss and every gradient (1e-6
// relative), alone and together; recomputation replays the random draws of
// forward.
#include <gtest/gtest.h>

#include "core/data/document_source.h"
#include "core/data/packer.h"
#include "train/trainer.h"
#include "offload/activations/activation_offload.h"
#include "offload/activations/checkpoint.h"
#include "offload/activations/tiling.h"
#include "tests/support/reference.h"

namespace lt {
namespace {

using testing::relative_error;

// Dropout inside the recomputed function: backward must see forward's mask.
TEST(Recompute, ReplaysTheRandomDrawsOfForward) {
  at::manual_seed(3);
  auto w = at::randn({16, 16}).requires_grad_(true);
  auto x = at::randn({4, 16}).requires_grad_(true);
  auto f = [&](const at::Tensor& t) { return at::gelu(at::matmul(t, w)) * at::bernoulli(at::full({4, 16}, 0.7)); };
  at::manual_seed(7);
  f(x).pow(2).sum().backward();
  auto gx = x.grad().clone(), gw = w.grad().clone();
  x.mutable_grad().reset(), w.mutable_grad().reset();
  at::manual_seed(7);
  auto y = checkpoint(f, x);
  at::rand({3});  // the generator moves on before backward
  y.pow(2).sum().backward();
  EXPECT_LT(relative_error(x.grad(), gx), 1e-6);
  EXPECT_LT(relative_error(w.grad(), gw), 1e-6);
}

// Inputs put in forward come back in backward (on the host: the same
// tensors), and nothing stays behind.
TEST(ActivationOffload, ReturnsEveryInputOnce) {
  auto stash = std::make_shared<ActivationOffload>();
  auto w = at::randn({8, 8}).requires_grad_(true);
  auto x = at::randn({2, 8}).requires_grad_(true);
  auto h = x;
  for (int layer = 0; layer < 3; ++layer)
    h = checkpoint([&](const at::Tensor& t) { return at::tanh(at::matmul(t, w)); }, h, stash);
  EXPECT_EQ(stash->host_bytes(), 3 * 2 * 8 * 4);
  h.sum().backward();
  EXPECT_EQ(stash->host_bytes(), 0);
  EXPECT_EQ(stash->peak_host_bytes(), 3 * 2 * 8 * 4);
  auto grad_x = x.grad().clone(), grad_w = w.grad().clone();
  x.mutable_grad().reset(), w.mutable_grad().reset();
  at::tanh(at::matmul(at::tanh(at::matmul(at::tanh(at::matmul(x, w)), w)), w)).sum().backward();
  EXPECT_LT(relative_error(grad_x, x.grad()), 1e-6);
  EXPECT_LT(relative_error(grad_w, w.grad()), 1e-6);
}

TEST(Tiling, TileCounts) {
  EXPECT_EQ(tile_count("1", 1000, 64), 1);
  EXPECT_EQ(tile_count("4", 1000, 64), 4);
  EXPECT_EQ(tile_count("auto", 1000, 64), 16);  // about seq / hidden
  EXPECT_EQ(tile_count("auto", 10, 64), 1);
  EXPECT_EQ(tile_count("50", 10, 64), 10);  // at most one position a tile
}

struct Setting {
  const char* name;
  std::string checkpoint = "none";
  int64_t every = 1;
  std::string mlp_tiles = "1", loss_tiles = "1";
  bool offload = false;
};

void PrintTo(const Setting& s, std::ostream* os) { *os << s.name; }

class MemorySetting : public ::testing::TestWithParam<Setting> {};

// Tied embeddings and biases: every kind of parameter; packed documents;
// 2 sequences of 61 tokens a step (tiles of unequal length).
Config memory_config() {
  Config c = testing::tiny_run("", 1);
  c.model = testing::tiny_model(true, true);
  c.model.num_layers = 3;
  c.data.seq_len = 61;
  c.data.document_mask = true;
  c.train.global_batch_tokens = 2 * 61;
  return c;
}

TEST_P(MemorySetting, SameLossAndGradients) {
  const Setting& s = GetParam();
  Config plain = memory_config();
  Config config = plain;
  config.memory = {parse_choice<Recompute>(s.checkpoint), s.every, s.mlp_tiles, s.loss_tiles, s.offload};
  auto source = make_document_source(plain.data, plain.model.vocab_size, 4, Split::Train);
  Packer packer(*source, plain.data);
  const Batch batch = packer.next(2, plain.data.seq_len);
  Trainer reference(plain), trainer(config);
  const double expected = reference.compute_gradients(batch, 1);
  EXPECT_NEAR(trainer.compute_gradients(batch, 1), expected, 1e-6 * expected);
  auto want = reference.model().named_parameters();
  for (const auto& item : trainer.model().named_parameters())
    EXPECT_LT(relative_error(item.value().grad(), want[item.key()].grad()), 1e-6) << item.key();
}

INSTANTIATE_TEST_SUITE_P(Features, MemorySetting,
                         ::testing::Values(Setting{"full", "full"}, Setting{"every_second_layer", "full", 2},
                                           Setting{"attention", "attention"}, Setting{"mlp", "mlp"},
                                           Setting{"tiled_mlp", "none", 1, "3"},
                                           Setting{"tiled_mlp_auto", "none", 1, "auto"},
                                           Setting{"tiled_loss", "none", 1, "1", "4"},
                                           Setting{"offloaded_inputs", "full", 1, "1", "1", true},
                                           Setting{"everything", "full", 1, "auto", "auto", true}),
                         [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace lt
