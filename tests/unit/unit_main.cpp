// Entry point of the unit tests: GoogleTest's own, with every test started
// from a fresh process's LibTorch state (ctest runs them many to a process).
#include <gtest/gtest.h>

#include "tests/support/reference.h"

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  ::testing::UnitTest::GetInstance()->listeners().Append(new lt::testing::FreshProcessState);
  return RUN_ALL_TESTS();
}
