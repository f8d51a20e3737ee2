// Attention over 32K tokens must stay O(seq x block): one 32K x 32K fp32
// score matrix alone would be 4 GiB. Runs in its own process so the peak
// resident memory it reads belongs to this test only.
#include <gtest/gtest.h>

#include "core/attention/attention.h"
#include "core/attention/flash.h"
#include "core/util/resources.h"

namespace lt {
namespace {

constexpr int64_t kSeq = 32 * 1024;
constexpr int64_t kLimit = 512LL << 20;  // 0.5 GiB, an eighth of one score matrix

void run_and_measure(AttentionKernel kernel, bool documents) {
  if (kernel == AttentionKernel::flash && !flash_available(at::empty({0})))
    GTEST_SKIP() << "this LibTorch has no fused flash kernel";
  at::manual_seed(0);
  auto q = at::randn({1, kSeq, 1, 32}).requires_grad_();
  auto k = at::randn({1, kSeq, 1, 32}).requires_grad_();
  auto v = at::randn({1, kSeq, 1, 32}).requires_grad_();
  AttentionMask mask;
  if (documents) {
    mask.q_document = at::div(at::arange(kSeq, at::kLong), kSeq / 3, "floor").unsqueeze(0);
    mask.k_document = mask.q_document;
  }
  const at::Device cpu(at::kCPU);
  reset_peak_memory(cpu);
  const int64_t before = peak_memory_bytes(cpu);
  auto result = attention(q, k, v, mask, {kernel, 1024});
  result.out.sum().backward();
  const int64_t growth = peak_memory_bytes(cpu) - before;
  EXPECT_LT(growth, kLimit) << "attention over " << kSeq << " tokens grew the peak by " << (growth >> 20) << " MiB";
  EXPECT_TRUE(at::isfinite(q.grad()).all().item<bool>());
}

TEST(AttentionMemory, Blockwise32KCausal) { run_and_measure(AttentionKernel::blockwise, false); }
TEST(AttentionMemory, Blockwise32KDocuments) { run_and_measure(AttentionKernel::blockwise, true); }
TEST(AttentionMemory, Flash32KCausal) { run_and_measure(AttentionKernel::flash, false); }
TEST(AttentionMemory, Flash32KDocuments) { run_and_measure(AttentionKernel::flash, true); }

}  // namespace
}  // namespace lt
