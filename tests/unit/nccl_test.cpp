// The CUDA path's NCCL communicator on one rank. Built whenever LT_CUDA is on
// (so CI proves it compiles and links); runs only where a GPU is visible.
#include <gtest/gtest.h>

#include "parallel/comm/nccl_communicator.h"

namespace lt {
namespace {

TEST(Nccl, SingleRankAllReduceIsIdentity) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device on this machine";
  NcclCommunicator comm(NcclCommunicator::create_id(), 0, 1, 0);
  auto t = at::arange(10, at::TensorOptions().dtype(at::kFloat).device(at::kCUDA));
  auto expected = t.clone();
  comm.all_reduce_sum(t);
  EXPECT_TRUE(t.equal(expected));
}

}  // namespace
}  // namespace lt
