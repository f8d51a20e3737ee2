// Every collective and autograd wrapper on the job's ranks (ctest runs this
// on 2 and 4) against the same math done serially, values and gradients;
// the watchdog; the byte counters.
#include <gtest/gtest.h>

#include <ATen/CPUGeneratorImpl.h>

#include <chrono>
#include <thread>

#include "core/util/error.h"
#include "parallel/comm/autograd_collectives.h"
#include "parallel/comm/communicator.h"
#include "tests/support/reference.h"

namespace lt {
namespace {

// A fresh communicator over the whole job for each test.
struct Job : ::testing::Test {
  Job() {
    MPI_Comm comm;
    MPI_Comm_dup(MPI_COMM_WORLD, &comm);
    world = std::make_unique<Communicator>(comm, "test", 60);
    P = world->size(), r = world->rank();
  }
  std::unique_ptr<Communicator> world;
  int P = 1, r = 0;
};

// The same pseudo-random tensor on every rank.
at::Tensor shared_random(at::IntArrayRef sizes, uint64_t seed) {
  auto generator = at::make_generator<at::CPUGeneratorImpl>(seed);
  return at::randn(sizes, generator);
}

TEST_F(Job, AllReduceSumAverageMax) {
  auto value = [&](int rank) { return at::arange(5, at::kFloat) + rank * 10.0; };
  auto sum = value(r).clone(), avg = value(r).clone(), max = value(r).clone();
  world->all_reduce(sum);
  world->all_reduce(avg, ReduceOp::avg);
  world->all_reduce(max, ReduceOp::max);
  auto expected = at::zeros({5});
  for (int i = 0; i < P; ++i) expected += value(i);
  EXPECT_TRUE(sum.allclose(expected));
  EXPECT_TRUE(avg.allclose(expected / P));
  EXPECT_TRUE(max.equal(value(P - 1)));
}

TEST_F(Job, AllGatherAndReduceScatter) {
  auto gathered = world->all_gather(at::full({2, 3}, static_cast<double>(r)));
  ASSERT_EQ(gathered.size(0), 2 * P);
  for (int i = 0; i < P; ++i) EXPECT_TRUE(gathered.narrow(0, 2 * i, 2).eq(i).all().item<bool>());

  auto input = [&](int rank) { return at::arange(P * 2 * 3, at::kFloat).view({P * 2, 3}) * (rank + 1); };
  auto mine = world->reduce_scatter(input(r));
  auto total = at::zeros({P * 2, 3});
  for (int i = 0; i < P; ++i) total += input(i);
  EXPECT_TRUE(mine.allclose(total.narrow(0, 2 * r, 2)));
}

TEST_F(Job, AllToAllEvenAndUneven) {
  // Even: chunk i (value 100 r + i) goes to rank i.
  auto input = at::empty({P, 2});
  for (int i = 0; i < P; ++i) input[i].fill_(100.0 * r + i);
  auto output = world->all_to_all(input);
  for (int j = 0; j < P; ++j) EXPECT_TRUE(output[j].eq(100.0 * j + r).all().item<bool>());

  // Uneven: rank r sends (i + r) % 3 + 1 rows to rank i; receive counts are exchanged.
  std::vector<int64_t> send;
  std::vector<at::Tensor> pieces;
  for (int i = 0; i < P; ++i) {
    send.push_back((i + r) % 3 + 1);
    pieces.push_back(at::full({send.back(), 4}, 100.0 * r + i));
  }
  auto received = world->all_to_all(at::cat(pieces), send);
  int64_t at = 0;
  for (int j = 0; j < P; ++j) {
    const int64_t rows = (r + j) % 3 + 1;
    EXPECT_TRUE(received.narrow(0, at, rows).eq(100.0 * j + r).all().item<bool>()) << "from rank " << j;
    at += rows;
  }
  EXPECT_EQ(at, received.size(0));
}

TEST_F(Job, BroadcastSendRecvBarrier) {
  auto t = at::full({3}, static_cast<double>(r));
  world->broadcast(t, P - 1);
  EXPECT_TRUE(t.eq(P - 1).all().item<bool>());

  // Around the ring: each rank sends its rank to the next, non-blocking.
  auto out = at::full({2}, static_cast<double>(r)), in = at::empty({2});
  auto receiving = world->irecv(in, (r + P - 1) % P);
  auto sending = world->isend(out, (r + 1) % P);
  receiving.wait();
  sending.wait();
  EXPECT_TRUE(in.eq((r + P - 1) % P).all().item<bool>());
  world->barrier();
}

TEST_F(Job, CountersRecordCallsAndBytes) {
  world->reset_counters();
  auto t = at::zeros({20});
  world->all_reduce(t);
  world->all_reduce(t);
  world->all_to_all(at::zeros({P * 3}));
  EXPECT_EQ(world->counters().at("all_reduce").calls, 2);
  EXPECT_EQ(world->counters().at("all_reduce").bytes, 2 * 20 * 4);
  EXPECT_EQ(world->counters().at("all_to_all").bytes, (P - 1) * 3 * 4);  // what leaves this rank
}

// A rank that never joins: the others get an error naming the operation,
// group and rank, instead of hanging. It joins late, so the job goes on.
TEST_F(Job, WatchdogNamesTheStuckCollective) {
  auto t = at::ones({4});
  if (r == 0) {
    world->set_timeout(0.3);
    auto work = world->all_reduce_async(t);
    try {
      work.wait();
      ADD_FAILURE() << "the watchdog did not fire";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("watchdog: all_reduce on group 'test' (rank 0 of " + std::to_string(P)),
                std::string::npos)
          << e.what();
    }
    while (!work.test()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  } else {
    std::this_thread::sleep_for(std::chrono::milliseconds(1500));
    world->all_reduce(t);
  }
  EXPECT_TRUE(t.eq(P).all().item<bool>());
}

// --- autograd wrappers: each rank's loss uses rank-specific weights; the
// job's loss is their sum, computed serially on the full tensors.

TEST_F(Job, AllGatherBackwardIsReduceScatter) {
  auto full = shared_random({P * 3, 5}, 1);
  std::vector<at::Tensor> weights;
  for (int i = 0; i < P; ++i) weights.push_back(shared_random({P * 3, 5}, 100 + i));
  auto x = full.narrow(0, 3 * r, 3).clone().requires_grad_();
  auto y = all_gather(x, *world, 0);
  EXPECT_TRUE(y.detach().equal(full));
  (y * weights[r]).sum().backward();

  auto serial = full.clone().requires_grad_();
  for (int i = 0; i < P; ++i) (serial * weights[i]).sum().backward();
  EXPECT_LT(testing::relative_error(x.grad(), serial.grad().narrow(0, 3 * r, 3)), 1e-6);
}

TEST_F(Job, ReduceScatterBackwardIsAllGather) {
  std::vector<at::Tensor> inputs, weights;
  for (int i = 0; i < P; ++i) inputs.push_back(shared_random({4, P * 2}, 200 + i));
  for (int i = 0; i < P; ++i) weights.push_back(shared_random({4, 2}, 300 + i));
  auto x = inputs[r].clone().requires_grad_();
  auto y = reduce_scatter(x, *world, 1);  // along dim 1
  (y * weights[r]).sum().backward();

  std::vector<at::Tensor> serial;
  for (auto& in : inputs) serial.push_back(in.clone().requires_grad_());
  auto total = at::stack(serial).sum(0);
  at::Tensor loss = at::zeros({});
  for (int i = 0; i < P; ++i) loss = loss + (total.narrow(1, 2 * i, 2) * weights[i]).sum();
  loss.backward();
  EXPECT_LT(testing::relative_error(y.detach(), total.detach().narrow(1, 2 * r, 2)), 1e-6);
  EXPECT_LT(testing::relative_error(x.grad(), serial[r].grad()), 1e-6);
}

// Ulysses' exchange: [b, s/P, H, d] -> [b, s, H/P, d] and back in backward.
TEST_F(Job, AllToAllBackwardIsTheInverseAllToAll) {
  const int64_t heads = 2 * P, seq = 3 * P;
  auto full = shared_random({2, seq, heads, 4}, 7);
  auto weight = shared_random({2, seq, heads, 4}, 8);
  auto x = full.narrow(1, 3 * r, 3).clone().requires_grad_();
  auto y = all_to_all(x, *world, 2, 1);
  EXPECT_TRUE(y.detach().equal(full.narrow(2, 2 * r, 2)));
  (y * weight.narrow(2, 2 * r, 2)).sum().backward();
  EXPECT_TRUE(x.grad().equal(weight.narrow(1, 3 * r, 3)));  // d(sum y*w)/dx is w, moved back
}

TEST_F(Job, CopyToAndReduceFromRegion) {
  auto shared = shared_random({3, 4}, 11);
  std::vector<at::Tensor> weights;
  for (int i = 0; i < P; ++i) weights.push_back(shared_random({3, 4}, 400 + i));
  // copy_to_region: identity forward; the gradient is summed over the ranks.
  auto x = shared.clone().requires_grad_();
  (copy_to_region(x, *world) * weights[r]).sum().backward();
  auto expected = at::zeros({3, 4});
  for (auto& w : weights) expected += w;
  EXPECT_LT(testing::relative_error(x.grad(), expected), 1e-6);
  // reduce_from_region: summed forward; the (replicated) gradient passes through.
  auto part = (shared * (r + 1)).requires_grad_();
  auto y = reduce_from_region(part, *world);
  EXPECT_LT(testing::relative_error(y.detach(), shared * (P * (P + 1) / 2.0)), 1e-6);
  (y * weights[0]).sum().backward();
  EXPECT_TRUE(part.grad().equal(weights[0]));
}

#ifdef LT_WITH_CUDA
// The CUDA path: the same call on device tensors goes through NCCL.
TEST_F(Job, DeviceTensorsGoThroughNccl) {
  if (!at::hasCUDA() || static_cast<int>(at::getNumGPUs()) < P) GTEST_SKIP() << "needs one GPU per rank";
  MPI_Comm comm;
  MPI_Comm_dup(MPI_COMM_WORLD, &comm);
  auto nccl = std::make_unique<Communicator>(comm, "test", 60, DeviceTransport::nccl);
  nccl->enable_device(r);
  world = std::move(nccl);
  auto device = at::TensorOptions().device(at::kCUDA, r);
  auto t = (at::arange(6, at::kFloat) + r).to(device.device());
  world->all_reduce(t);
  auto expected = at::zeros({6});
  for (int i = 0; i < P; ++i) expected += at::arange(6, at::kFloat) + i;
  EXPECT_TRUE(t.cpu().allclose(expected));
  auto gathered = world->all_gather(at::full({2}, static_cast<double>(r), device));
  for (int i = 0; i < P; ++i) EXPECT_TRUE(gathered.cpu().narrow(0, 2 * i, 2).eq(i).all().item<bool>());
  auto input = at::empty({P, 2});
  for (int i = 0; i < P; ++i) input[i].fill_(100.0 * r + i);
  auto output = world->all_to_all(input.to(device.device())).cpu();
  for (int j = 0; j < P; ++j) EXPECT_TRUE(output[j].eq(100.0 * j + r).all().item<bool>());
}
#endif

}  // namespace
}  // namespace lt
