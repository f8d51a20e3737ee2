// The Mesh's MPI communicators hold exactly the ranks the Layout computes,
// for every group, on this job's ranks.
#include <gtest/gtest.h>

#include "parallel/mesh/mesh.h"

namespace lt {
namespace {

void expect_groups_match_layout(const Degrees& degrees) {
  const Layout layout(degrees);
  Mesh mesh(layout, MPI_COMM_WORLD, 60);
  for (Group kind : kAllGroups) {
    auto& comm = mesh.group(kind);
    const auto expected = layout.group(kind, mesh.rank());
    ASSERT_EQ(comm.size(), static_cast<int>(expected.size())) << group_name(kind);
    auto members = comm.all_gather(at::tensor({static_cast<int64_t>(mesh.rank())}, at::kLong));
    EXPECT_EQ(std::vector<int64_t>(members.data_ptr<int64_t>(), members.data_ptr<int64_t>() + members.numel()),
              std::vector<int64_t>(expected.begin(), expected.end()))
        << group_name(kind);
    EXPECT_EQ(expected[comm.rank()], mesh.rank()) << group_name(kind);
  }
  EXPECT_GE(mesh.local_size(), 1);
  EXPECT_LT(mesh.local_rank(), mesh.local_size());
}

TEST(Mesh, GroupsMatchTheLayout) {
  int world = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  expect_groups_match_layout({1, 1, 1, world, 1, world});  // pure dp, ep over all
  if (world == 4) {
    expect_groups_match_layout({2, 1, 1, 2, 1, 1});  // tp 2 x dp 2
    expect_groups_match_layout({1, 2, 2, 1, 1, 2});  // hybrid sp: ulysses 2 x ring 2, ep 2
    expect_groups_match_layout({1, 1, 2, 1, 2, 1});  // ring 2 x pp 2
  }
  if (world == 2) expect_groups_match_layout({1, 1, 1, 1, 2, 1});  // pp 2
}

}  // namespace
}  // namespace lt
