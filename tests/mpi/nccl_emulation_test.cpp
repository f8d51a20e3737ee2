// NCCL's ordering emulated on CPU (parallel.emulate_nccl): operations of a
// device-bound group run one at a time in issue order, a send completes
// only once its receive has started, and messages between two ranks match
// by order. The two orderings that hang over NCCL hang here too, and the
// watchdog names the group and the operation within its timeout; issued as
// one exchange they complete. A device-bound group refuses use before its
// transport is enabled, and an aborted one every later call.
#include <gtest/gtest.h>

#include <chrono>

#include "core/util/error.h"
#include "parallel/comm/communicator.h"
#include "parallel/mesh/mesh.h"
#include "tests/support/reference.h"

namespace lt {
namespace {

std::unique_ptr<Communicator> emulated(double timeout_s) {
  MPI_Comm comm;
  MPI_Comm_dup(MPI_COMM_WORLD, &comm);
  auto c = std::make_unique<Communicator>(comm, "emulated", timeout_s, DeviceTransport::emulated_nccl);
  c->enable_device(-1);
  return c;
}

// Waits on `work`, which must not finish: the watchdog's message.
std::string watchdog_message(Work& work) {
  try {
    work.wait();
  } catch (const Error& e) {
    return e.what();
  }
  return "the watchdog did not fire";
}

void expect_names(const std::string& message, const std::string& op) {
  EXPECT_NE(message.find("watchdog: " + op + " on group 'emulated'"), std::string::npos) << message;
}

// Ring attention's rotation as it was: each rank receives from the previous,
// then sends to the next, as two operations. Every rank's receive waits on
// a send queued behind its peer's own receive.
TEST(EmulatedNccl, RingRotationIssuedApartHangsAndTheWatchdogNamesIt) {
  auto comm = emulated(1.0);
  const int P = comm->size(), r = comm->rank();
  auto incoming = at::empty({4});
  const auto start = std::chrono::steady_clock::now();
  auto received = comm->irecv(incoming, (r + P - 1) % P);
  auto sent = comm->isend(at::full({4}, r, at::kFloat), (r + 1) % P);
  expect_names(watchdog_message(received), "recv");
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 5.0);
  comm->abort("the test is over");
  EXPECT_THROW(sent.wait(), Error);
  MPI_Barrier(MPI_COMM_WORLD);
}

TEST(EmulatedNccl, RingRotationAsOneExchangeCompletes) {
  auto comm = emulated(60);
  const int P = comm->size(), r = comm->rank();
  auto incoming = at::empty({4});
  comm->exchange({{at::full({4}, r, at::kFloat), (r + 1) % P}}, {{incoming, (r + P - 1) % P}}).wait();
  EXPECT_TRUE(incoming.eq((r + P - 1) % P).all().item<bool>());
}

// 1F1B on two stages, two micro-batches, as it was: stage 0 sends F1 before
// it receives B0, stage 1 sends B0 before it receives F1. Both sends wait
// for receives queued behind them. (Ranks pair up: 0-1, 2-3.)
TEST(EmulatedNccl, PipelineSendsBeforeReceivesHangAndTheWatchdogNamesIt) {
  auto comm = emulated(1.0);
  const int r = comm->rank(), peer = r ^ 1;
  if (peer >= comm->size()) GTEST_SKIP() << "an odd rank out";
  auto grad = at::empty({8});
  auto sent = comm->isend(at::ones({8}), peer);
  auto received = comm->irecv(grad, peer);
  expect_names(watchdog_message(received), "recv");
  comm->abort("the test is over");
  MPI_Barrier(MPI_COMM_WORLD);
}

TEST(EmulatedNccl, PipelineSendWithTheNextReceiveCompletes) {
  auto comm = emulated(60);
  const int r = comm->rank(), peer = r ^ 1;
  if (peer >= comm->size()) GTEST_SKIP() << "an odd rank out";
  auto grad = at::empty({8});
  comm->exchange({{at::full({8}, r, at::kFloat), peer}}, {{grad, peer}}).wait();
  EXPECT_TRUE(grad.eq(peer).all().item<bool>());
}

// NCCL has no tags: the first message from a rank lands in the first
// receive from it, whatever the tags say.
TEST(EmulatedNccl, MessagesMatchByOrderNotTag) {
  auto comm = emulated(60);
  const int r = comm->rank(), peer = r ^ 1;
  if (peer >= comm->size()) GTEST_SKIP() << "an odd rank out";
  auto first = at::empty({2}), second = at::empty({2});
  comm->exchange({{at::full({2}, 1.0), peer, 7}, {at::full({2}, 2.0), peer, 3}}, {{first, peer, 3}, {second, peer, 7}})
      .wait();
  EXPECT_TRUE(first.eq(1).all().item<bool>());
  EXPECT_TRUE(second.eq(2).all().item<bool>());
}

// A device-bound group takes nothing before its transport is enabled: the
// class of "a collective before NCCL exists", on CPU.
TEST(EmulatedNccl, DeviceBoundGroupsRefuseUseBeforeEnable) {
  Config config = testing::tiny_run("", 1);
  config.parallel.emulate_nccl = true;
  Mesh mesh(Layout(resolve_degrees(config, testing::world_size())), MPI_COMM_WORLD, 60, DeviceTransport::emulated_nccl);
  auto t = at::ones({2});
  try {
    mesh.group(Group::dp).all_reduce(t);
    ADD_FAILURE() << "a device-bound group took an operation before enable_device";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("all_reduce on group 'dp' before its device transport (emulated NCCL)"),
              std::string::npos)
        << e.what();
  }
  mesh.enable_device(at::kCPU);
  mesh.group(Group::dp).all_reduce(t);
  EXPECT_TRUE(t.eq(testing::world_size()).all().item<bool>());
  // A group made later starts enabled.
  auto& later = mesh.subgroup("later", 0);
  EXPECT_TRUE(later.device_enabled());
  later.barrier();
}

TEST(EmulatedNccl, AnAbortedGroupRefusesLaterCalls) {
  auto comm = emulated(60);
  comm->abort("the watchdog fired");
  auto t = at::ones({2});
  try {
    comm->all_reduce(t);
    ADD_FAILURE() << "an aborted group took an operation";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("group 'emulated' was aborted: the watchdog fired"), std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace lt
