// The memory regimes of real runs on the GPU against the same run on the
// host, both in fp32, three steps: chunks of several layers (with and
// without a persistent one, the update overlapped or not), tiled MLP and
// loss, activation offload, every layer or every second one recomputed; and
// the one-device part of a pipeline (two stages in one process, the hidden
// states and their gradient handed over as the stages hand them). Each case
// runs on the host first and asserts its regime there, so that every machine
// checks the cases; the device run needs CUDA and is skipped without it
// (scripts/gpu_check.sh runs the Cuda* tests on a GPU machine).
#include <gtest/gtest.h>

#include <functional>
#include <string>

#include "core/model/llama.h"
#include "offload/activations/tiling.h"
#include "offload/chunks/chunk_manager.h"
#include "train/equivalence_check.h"
#include "train/trainer.h"
#include "tests/support/reference.h"

namespace lt {
namespace {

// fp32 on both sides: what differs is the order of sums and the kernels.
constexpr double kLossTolerance = 1e-4;

struct Regime {
  std::string name;
  std::function<void(Config&)> apply;
  std::function<void(Trainer&, const Config&)> expect;  // the regime, seen in a trainer
};

void PrintTo(const Regime& regime, std::ostream* out) { *out << regime.name; }

void expect_chunks_of_two(Trainer& t, const Config&) {
  ASSERT_NE(t.chunks(), nullptr);
  EXPECT_EQ(t.chunks()->chunk_count(), 2);
  EXPECT_EQ(t.chunks()->chunk_of(0), t.chunks()->chunk_of(1)) << "the first chunk holds two layers";
}

void expect_tiles_split(Trainer&, const Config& c) {
  EXPECT_EQ(tile_count(c.memory.mlp_tiles, c.data.seq_len, c.model.hidden_size), 2);
  EXPECT_EQ(tile_count(c.memory.loss_tiles, c.data.seq_len, c.model.hidden_size), 2);
}

void offload_chunks(Config& c, int64_t persist, bool overlap) {
  c.memory.offload_model = true, c.memory.n_persist = persist, c.memory.overlap_update = overlap;
  c.memory.chunk_mb = chunk_mb_holding(c, 2.5);
}

std::vector<Regime> regimes() {
  auto none = [](Trainer&, const Config&) {};
  return {
      {"checkpoint_every_layer", [](Config&) {}, none},
      {"checkpoint_every_second_layer", [](Config& c) { c.memory.checkpoint_every = 2; }, none},
      {"activation_offload", [](Config& c) { c.memory.offload_activations = true; }, none},
      {"tiled_mlp_and_loss", [](Config& c) { c.memory.mlp_tiles = "2", c.memory.loss_tiles = "2"; },
       expect_tiles_split},
      {"chunks_of_2_layers", [](Config& c) { offload_chunks(c, 0, true); }, expect_chunks_of_two},
      {"chunks_of_2_layers_one_persistent_tiled_offloaded",
       [](Config& c) {
         offload_chunks(c, 1, false);
         c.memory.mlp_tiles = "2", c.memory.loss_tiles = "2", c.memory.offload_activations = true;
       },
       [](Trainer& t, const Config& c) {
         expect_chunks_of_two(t, c);
         expect_tiles_split(t, c);
       }},
  };
}

// 4 layers, every one recomputed unless the regime says otherwise.
Config regime_base(const std::string& dir) {
  Config c = testing::tiny_run(dir, 3);
  c.model.num_layers = 4;
  c.memory.checkpoint = Recompute::full;
  return c;
}

struct CudaRegimes : ::testing::TestWithParam<Regime> {};

TEST_P(CudaRegimes, TrainAsTheHost) {
  const Regime& regime = GetParam();
  Config c = regime_base(testing::scratch_dir("device_regimes", regime.name + "/host"));
  regime.apply(c);
  Trainer host(c);
  const auto expected = host.run().losses;
  regime.expect(host, c);
  if (!testing::has_cuda()) GTEST_SKIP() << "no CUDA device (the host run and its regime were checked)";
  c.run_dir = testing::scratch_dir("device_regimes", regime.name + "/cuda");
  c.train.device = DeviceKind::cuda;
  Trainer device(c);
  const auto losses = device.run().losses;
  regime.expect(device, c);
  ASSERT_EQ(losses.size(), expected.size());
  for (const auto& [step, loss] : expected)
    EXPECT_NEAR(losses.at(step), loss, kLossTolerance * loss) << "step " << step;
  if (c.memory.offload_activations) {  // the regime: the recomputed layers' inputs left the device
    c.memory.offload_activations = false;
    c.run_dir += "_resident";
    Trainer resident(c);
    resident.run();
    EXPECT_LT(device.last_activation_bytes(), resident.last_activation_bytes());
  }
}

INSTANTIATE_TEST_SUITE_P(Memory, CudaRegimes, ::testing::ValuesIn(regimes()),
                         [](const auto& info) { return info.param.name; });

// Two pipeline stages in one process: the first's hidden states go to the
// second as a received tensor, and the gradient the second returns for them
// runs the first's backward; the loss and every gradient equal the whole
// model's on the host (fp32: within 1e-5).
TEST(CudaPipeline, TwoStagesOnOneDeviceMatchTheWholeModelOnTheHost) {
  ModelConfig m = testing::tiny_model();
  m.num_layers = 4;
  ModelShard first, last;
  first.num_layers = 2, first.last_stage = false;
  last.first_layer = 2, last.num_layers = 2, last.first_stage = false;
  LlamaForCausalLM whole(m), a(m, first), b(m, last);
  for (auto* model : {&whole, &a, &b}) (*model)->initialize(5);
  const int64_t s = 48;
  auto tokens = at::randint(m.vocab_size, {2, s + 1}, at::kLong);
  const auto inputs = tokens.narrow(1, 0, s).contiguous(), labels = tokens.narrow(1, 1, s).contiguous();
  const AttentionMask causal{true, {}, {}, {}, {}, nullptr};
  const ModelInput input{inputs, at::arange(s, at::kLong).expand({2, s}).contiguous(), causal};
  auto loss_of = [&](const at::Tensor& logits, const at::Tensor& y) {
    return at::cross_entropy_loss(logits.reshape({-1, m.vocab_size}), y.reshape(-1));
  };
  const auto expected = loss_of(whole->forward(input), labels);
  expected.backward();
  if (!testing::has_cuda()) GTEST_SKIP() << "no CUDA device";
  const at::Device cuda(at::kCUDA, 0);
  a->to(cuda), b->to(cuda);
  const ModelInput on_device{input.tokens.to(cuda), input.positions.to(cuda), causal};
  const auto sent = a->forward(on_device);
  const auto received = sent.detach().requires_grad_();
  const auto loss = loss_of(b->forward(on_device, received), labels.to(cuda));
  loss.backward();
  sent.backward(received.grad());
  const auto fp32 = testing::agreement("fp32");
  EXPECT_TRUE(testing::losses_agree(loss.item<double>(), expected.item<double>(), fp32));
  auto want = whole->named_parameters();
  int64_t compared = 0;
  for (auto* stage : {&a, &b})
    for (const auto& item : (*stage)->named_parameters()) {
      EXPECT_TRUE(testing::gradients_agree(item.value().grad().cpu(), want[item.key()].grad(), fp32)) << item.key();
      ++compared;
    }
  EXPECT_EQ(compared, static_cast<int64_t>(want.size()));
}

}  // namespace
}  // namespace lt
