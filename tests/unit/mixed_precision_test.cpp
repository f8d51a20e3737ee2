// bf16 compute (train.precision: bf16, issue 19): each op against fp64 on
// the same bf16 inputs, within bf16's rounding; the whole model in bf16
// against fp32; the compute weights' cache and their fp32 gradients; and a
// bf16 run resumed bit for bit.
#include <gtest/gtest.h>

#include <torch/autograd.h>

#include <cmath>

#include "core/attention/attention.h"
#include "core/checkpoint/safetensors.h"
#include "core/model/llama.h"
#include "core/model/loss.h"
#include "core/util/bf16_support.h"
#include "train/trainer.h"
#include "tests/support/reference.h"

namespace lt {
namespace {

using testing::relative_error;

// bf16 values, and the same values in fp64 for the reference.
at::Tensor bf16_randn(at::IntArrayRef sizes) { return at::randn(sizes).to(at::kBFloat16); }
at::Tensor f64(const at::Tensor& t) { return t.detach().to(at::kDouble).requires_grad_(); }

struct AttentionCase {
  const char* name;
  AttentionKernel kernel;
  bool documents = false, offset = false;
  int64_t kv_heads = 4;
  int64_t seq = 70;  // 1100 x 32: long enough for the bf16 kernel itself on CPU (flash.cpp)
};

class Bf16Attention : public ::testing::TestWithParam<AttentionCase> {};

// Outputs rounded once to bf16 (~2^-9 relative); lse stays fp32; gradients
// of q, k, v, accumulated in fp32, rounded once.
TEST_P(Bf16Attention, MatchesFp64) {
  const auto c = GetParam();
  at::manual_seed(3);
  const int64_t b = 2, sq = c.seq, sk = c.offset ? c.seq + 20 : c.seq, heads = 4, d = 32;
  auto q = bf16_randn({b, sq, heads, d}).requires_grad_();
  auto k = bf16_randn({b, sk, c.kv_heads, d}).requires_grad_(), v = bf16_randn({b, sk, c.kv_heads, d}).requires_grad_();
  AttentionMask mask;
  // With an offset the queries are the last sq of the sk keys' positions.
  auto k_index = at::arange(sk, at::kLong), q_index = k_index.narrow(0, sk - sq, sq);
  if (c.offset) mask.q_index = q_index, mask.k_index = k_index;
  if (c.documents) {
    mask.k_document = (k_index >= 23).to(at::kLong).view({1, sk}).expand({b, sk}).contiguous();
    mask.k_document[1].narrow(0, 50, sk - 50).fill_(2);
    mask.q_document = mask.k_document.narrow(1, sk - sq, sq).contiguous();
  }
  auto result = attention(q, k, v, mask, {c.kernel, 32});
  EXPECT_EQ(result.out.scalar_type(), at::kBFloat16);
  EXPECT_EQ(result.lse.scalar_type(), at::kFloat);

  auto q2 = f64(q), k2 = f64(k), v2 = f64(v);
  const int64_t group = heads / c.kv_heads;
  auto [out, lse] = testing::naive_attention(q2, k2.repeat_interleave(group, 2), v2.repeat_interleave(group, 2),
                                             testing::visibility(q_index, k_index, mask.q_document, mask.k_document));
  EXPECT_LT(relative_error(result.out, out), 8e-3);
  EXPECT_LT(relative_error(result.lse, lse), 1e-4);
  auto grad = at::randn(out.sizes()).to(at::kBFloat16);
  result.out.backward(grad);
  out.backward(grad.to(at::kDouble));
  EXPECT_LT(relative_error(q.grad(), q2.grad()), 2e-2) << "dq";
  EXPECT_LT(relative_error(k.grad(), k2.grad()), 2e-2) << "dk";
  EXPECT_LT(relative_error(v.grad(), v2.grad()), 2e-2) << "dv";
}

INSTANTIATE_TEST_SUITE_P(
    Kernels, Bf16Attention,
    ::testing::Values(AttentionCase{"flash_causal", AttentionKernel::flash},
                      AttentionCase{"flash_documents", AttentionKernel::flash, true},
                      AttentionCase{"flash_gqa", AttentionKernel::flash, true, false, 1},
                      AttentionCase{"flash_long_documents", AttentionKernel::flash, true, false, 2, 1100},
                      AttentionCase{"blockwise_causal", AttentionKernel::blockwise},
                      AttentionCase{"blockwise_documents", AttentionKernel::blockwise, true},
                      AttentionCase{"blockwise_offset", AttentionKernel::blockwise, true, true, 2}),
    [](const auto& info) { return std::string(info.param.name); });

// Statistics in fp32, output in bf16, weight from the compute copy.
TEST(Bf16Ops, RMSNormMatchesFp64) {
  auto compute = std::make_shared<ComputeWeights>(at::kBFloat16);
  RMSNorm norm(64, 1e-6, compute);
  {
    at::NoGradGuard no_grad;
    norm->weight.uniform_(0.5, 1.5);
  }
  auto x = (bf16_randn({3, 5, 64}) * 30)
               .to(at::kBFloat16);  // large values: squares would overflow nothing, but lose bits in bf16
  auto y = norm(x);
  EXPECT_EQ(y.scalar_type(), at::kBFloat16);
  auto xd = x.to(at::kDouble), w = norm->weight.detach().to(at::kBFloat16).to(at::kDouble);
  EXPECT_LT(relative_error(y, w * xd * at::rsqrt(xd.pow(2).mean(-1, true) + 1e-6)), 6e-3);
}

// Angles in fp64 at positions in the millions, cast for the product only.
TEST(Bf16Ops, RopeAtLongPositionsMatchesFp64) {
  const int64_t d = 64;
  RotaryEmbedding rope(d, 500000);
  auto positions = at::tensor({0L, 1L, 4095L, 1000003L, 3999999L}, at::kLong).view({1, 5});
  auto x = bf16_randn({1, 5, 2, d});
  auto [cos, sin] = rope.cos_sin(positions);
  auto y = apply_rotary(x, cos, sin);
  EXPECT_EQ(y.scalar_type(), at::kBFloat16);
  auto inv = at::pow(500000.0, -at::arange(0, d, 2, at::kDouble) / d);
  auto angles = positions.to(at::kDouble).unsqueeze(-1) * inv;
  angles = at::cat({angles, angles}, -1).unsqueeze(2);
  auto xd = x.to(at::kDouble);
  auto rotated = at::cat({-xd.narrow(-1, d / 2, d / 2), xd.narrow(-1, 0, d / 2)}, -1);
  EXPECT_LT(relative_error(y, xd * angles.cos() + rotated * angles.sin()), 8e-3);
}

// bf16 logits, cross-entropy in fp32 (whole and in tiles).
TEST(Bf16Ops, LossMatchesFp64) {
  auto logits = (bf16_randn({2, 40, 500}) * 4).to(at::kBFloat16);
  auto labels = at::randint(500, {2, 40}, at::kLong);
  labels[0][3] = kIgnoreIndex;
  auto loss = cross_entropy_sum(logits, labels);
  EXPECT_EQ(loss.scalar_type(), at::kFloat);
  auto expected = at::cross_entropy_loss(logits.to(at::kDouble).view({-1, 500}), labels.view({-1}), {},
                                         at::Reduction::Sum, kIgnoreIndex);
  EXPECT_LT(relative_error(loss, expected), 1e-6);
}

// The cast happens once per refresh; gradients reach the fp32 master; a
// parameter in the compute dtype is used as it is.
TEST(ComputeWeights, CastOncePerRefreshGradientsInFp32) {
  ComputeWeights compute(at::kBFloat16);
  auto master = at::randn({8, 4}).requires_grad_();
  auto a = compute(master), b = compute(master);
  EXPECT_EQ(a.scalar_type(), at::kBFloat16);
  EXPECT_EQ(a.data_ptr(), b.data_ptr());  // the same copy, not a new cast
  (a.to(at::kFloat).sum() * 2 + b.to(at::kFloat).sum()).backward();
  EXPECT_EQ(master.grad().scalar_type(), at::kFloat);
  EXPECT_TRUE(master.grad().equal(at::full({8, 4}, 3.0)));
  {
    at::NoGradGuard no_grad;
    master.add_(1);
  }
  EXPECT_TRUE(compute(master).equal(b)) << "stale until refreshed";
  compute.refresh();
  EXPECT_TRUE(compute(master).equal((master.detach()).to(at::kBFloat16)));
  // A parameter already in the compute dtype (an offloaded chunk's device copy) is itself.
  auto copy = at::randn({3}).to(at::kBFloat16).requires_grad_();
  EXPECT_TRUE(compute(copy).is_same(copy));
}

// The whole model in bf16 against fp32 on the same weights: the loss within
// 1e-2 relative, every parameter's gradient at cosine >= 0.999, gradients
// and parameters fp32. A key bias is held to 0.995: without RoPE its exact
// gradient is zero (adding one value to every score of a query leaves the
// softmax as it was), so what it has is the small remainder of a sum of
// bf16 terms that nearly cancel. Over 40 draws its cosine ranged from
// 0.9988 to 0.9999 on one CPU, and another CPU's bf16 kernels met 0.9988
// on this draw; every other gradient stayed at >= 0.9995.
TEST(MixedPrecision, ModelInBf16MatchesFp32) {
  for (bool tied : {false, true}) {
    SCOPED_TRACE(tied ? "tied" : "untied");
    auto config = testing::tiny_model(tied, /*bias=*/true);
    config.num_layers = 3;
    LlamaForCausalLM fp32(config), bf16(config, testing::precision_shard("bf16"));
    fp32->initialize(5);
    bf16->initialize(5);
    const int64_t b = 2, s = 48;
    auto tokens = at::randint(config.vocab_size, {b, s + 1}, at::kLong);
    auto documents = (at::arange(s, at::kLong) >= 20).to(at::kLong).view({1, s}).expand({b, s}).contiguous();
    auto positions = at::where(documents.eq(1), at::arange(s, at::kLong) - 20, at::arange(s, at::kLong));
    Batch batch{
        tokens.narrow(1, 0, s).contiguous(), tokens.narrow(1, 1, s).contiguous(), positions, documents, {}, nullptr};
    auto expected = loss_sum(*fp32, batch), loss = loss_sum(*bf16, batch);
    EXPECT_EQ(loss.scalar_type(), at::kFloat);
    EXPECT_LT(std::abs(loss.item<double>() - expected.item<double>()), 1e-2 * expected.item<double>());
    expected.backward();
    loss.backward();
    auto reference = fp32->named_parameters();
    for (const auto& item : bf16->named_parameters()) {
      EXPECT_EQ(item.value().scalar_type(), at::kFloat) << item.key();
      EXPECT_EQ(item.value().grad().scalar_type(), at::kFloat) << item.key();
      const bool key_bias = item.key().find("k_proj.bias") != std::string::npos;
      EXPECT_GE(testing::cosine(item.value().grad(), reference[item.key()].grad()), key_bias ? 0.995 : 0.999)
          << item.key();
    }
  }
}

// A bf16 run stopped after 2 steps and resumed continues bit for bit: the
// checkpoint holds the fp32 masters and moments, and the compute copies
// are cast anew from them.
TEST(MixedPrecision, Bf16ResumeIsBitExact) {
  const auto dir = testing::scratch_dir("mixed_precision", "resume");
  auto config = [&](const std::string& name, int64_t steps) {
    Config c = testing::tiny_run(dir + "/" + name, steps);
    c.train.precision = Precision::bf16;
    c.checkpoint.interval = 2;
    return c;
  };
  const auto straight = Trainer(config("straight", 4)).run().losses;
  Config rest = config("resumed", 4);
  rest.checkpoint.resume = dir + "/straight/checkpoints/step_00000002";
  const auto resumed = Trainer(rest).run().losses;
  ASSERT_EQ(resumed.size(), 2u);
  for (const auto& [step, loss] : resumed) EXPECT_EQ(loss, straight.at(step)) << "step " << step;
  auto a = load_safetensors(dir + "/straight/checkpoints/step_00000004/model.safetensors");
  auto b = load_safetensors(dir + "/resumed/checkpoints/step_00000004/model.safetensors");
  for (const auto& [name, t] : a) EXPECT_TRUE(t.equal(b.at(name))) << name;
}

// A bf16 run trains as the fp32 run does: each step's loss within 2e-2.
TEST(MixedPrecision, Bf16TrainingFollowsFp32) {
  const auto dir = testing::scratch_dir("mixed_precision", "follows");
  Config c = testing::tiny_run(dir + "/fp32", 6);
  const auto fp32 = Trainer(c).run().losses;
  c.run_dir = dir + "/bf16";
  c.train.precision = Precision::bf16;
  const auto bf16 = Trainer(c).run().losses;
  for (const auto& [step, loss] : fp32) EXPECT_NEAR(bf16.at(step), loss, 2e-2 * loss) << "step " << step;
  EXPECT_LT(bf16.rbegin()->second, bf16.begin()->second);
}

// auto's choice on a CPU from its measured product rates (FLOP/s): bf16
// where its products keep up (AMX, or EPYC's AVX512-BF16 at about fp32's
// rate), fp32 where they run at half (a Xeon's AVX512-BF16 alone) or the
// CPU has no bf16 instructions.
TEST(Precision, AutoTakesBf16WhereItsProductsKeepUp) {
  EXPECT_EQ(faster_precision({300e9, 1500e9}), Precision::bf16);  // AMX
  EXPECT_EQ(faster_precision({400e9, 390e9}), Precision::bf16);   // AMD EPYC, AVX512-BF16
  EXPECT_EQ(faster_precision({280e9, 150e9}), Precision::fp32);   // Xeon, AVX512-BF16 without AMX
  EXPECT_EQ(faster_precision({30e9, 0}), Precision::fp32);        // no bf16 instructions
  EXPECT_EQ(resolve_precision(Precision::bf16, DeviceKind::cpu), Precision::bf16);
  EXPECT_EQ(resolve_precision(Precision::automatic, DeviceKind::cuda), Precision::bf16);
}

// On a CUDA device; skipped where none is visible (scripts/gpu_check.sh
// runs them on a GPU machine).
TEST(CudaBf16, ModelOnDeviceMatchesCpuFp32) {
  if (!testing::has_cuda()) GTEST_SKIP() << "no CUDA device";
  const at::Device cuda(at::kCUDA, 0);
  auto config = testing::tiny_model(/*tied=*/true);
  LlamaForCausalLM cpu(config), gpu(config, testing::precision_shard("bf16"));
  cpu->initialize(9);
  gpu->initialize(9);
  gpu->to(cuda);
  const int64_t s = 64;
  auto tokens = at::randint(config.vocab_size, {2, s + 1}, at::kLong);
  Batch batch{tokens.narrow(1, 0, s).contiguous(),
              tokens.narrow(1, 1, s).contiguous(),
              at::arange(s, at::kLong).expand({2, s}).contiguous(),
              {},
              {},
              nullptr};
  auto expected = loss_sum(*cpu, batch), loss = loss_sum(*gpu, batch.to(cuda));
  EXPECT_NEAR(loss.item<double>(), expected.item<double>(), 1e-2 * expected.item<double>());
  expected.backward();
  loss.backward();
  auto reference = cpu->named_parameters();
  for (const auto& item : gpu->named_parameters())
    EXPECT_GE(testing::cosine(item.value().grad().cpu(), reference[item.key()].grad()), 0.999) << item.key();
}

// Packed documents through CUDA's variable-length kernel, one call for both
// rows, with the spans found on the host (as a batch brings them) and, for
// masks without them, from the ids on the device: values, log-sum-exp and
// gradients against fp64.
TEST(CudaBf16, FlashWithPackedDocumentsMatchesFp64) {
  if (!testing::has_cuda()) GTEST_SKIP() << "no CUDA device";
  const at::Device cuda(at::kCUDA, 0);
  const int64_t b = 2, s = 300, heads = 8, d = 64;
  auto q = bf16_randn({b, s, heads, d}), k = bf16_randn({b, s, heads, d}), v = bf16_randn({b, s, heads, d});
  auto documents = (at::arange(s, at::kLong) >= 123).to(at::kLong).expand({b, s}).contiguous();
  documents[1].narrow(0, 40, s - 40).add_(3);
  documents[1].narrow(0, 290, s - 290).add_(1);  // a span of 10 tokens ending the batch
  const auto index = at::arange(s, at::kLong);
  auto q64 = f64(q), k64 = f64(k), v64 = f64(v);
  auto [out, lse] = testing::naive_attention(q64, k64, v64, testing::visibility(index, index, documents, documents));
  const auto grad = bf16_randn({b, s, heads, d});
  out.backward(grad.to(at::kDouble));
  auto q2 = q.to(cuda).requires_grad_(), k2 = k.to(cuda).requires_grad_(), v2 = v.to(cuda).requires_grad_();
  for (bool host_spans : {true, false}) {
    AttentionMask mask{true, documents.to(cuda), documents.to(cuda), {}, {}, nullptr};
    if (host_spans) mask.spans = document_spans(documents)->to(cuda);
    auto result = attention(q2, k2, v2, mask, {AttentionKernel::flash});
    EXPECT_LT(relative_error(result.out.cpu(), out), 8e-3) << "host spans " << host_spans;
    EXPECT_LT(relative_error(result.lse.cpu(), lse), 1e-3) << "host spans " << host_spans;
    const auto grads = torch::autograd::grad({result.out}, {q2, k2, v2}, {grad.to(cuda)});
    EXPECT_LT(relative_error(grads[0].cpu(), q64.grad()), 2e-2) << "dq, host spans " << host_spans;
    EXPECT_LT(relative_error(grads[1].cpu(), k64.grad()), 2e-2) << "dk, host spans " << host_spans;
    EXPECT_LT(relative_error(grads[2].cpu(), v64.grad()), 2e-2) << "dv, host spans " << host_spans;
  }
}

// The layers' weights in host chunks, copied to the device as they are
// used: the same losses as weights resident on the device.
TEST(CudaBf16, OffloadedChunksTrainAsResidentWeights) {
  if (!testing::has_cuda()) GTEST_SKIP() << "no CUDA device";
  const auto dir = testing::scratch_dir("mixed_precision", "cuda_chunks");
  Config c = testing::tiny_run(dir + "/resident", 3);
  c.train.device = DeviceKind::cuda;
  c.train.precision = Precision::bf16;
  const auto resident = Trainer(c).run().losses;
  c.run_dir = dir + "/chunks";
  c.memory.offload_model = true, c.memory.checkpoint = Recompute::full, c.memory.chunk_mb = 0.01,
  c.memory.n_persist = 1;
  const auto chunks = Trainer(c).run().losses;
  for (const auto& [step, loss] : resident) EXPECT_NEAR(chunks.at(step), loss, 5e-3 * loss) << "step " << step;
}

}  // namespace
}  // namespace lt
