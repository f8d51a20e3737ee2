// Every program allocates through tcmalloc where the build links it
// (CMakeLists.txt): linked after the C library, glibc's malloc would still
// serve every tensor and the link would do nothing.
#include <dlfcn.h>
#include <gtest/gtest.h>

namespace {

TEST(Allocator, MallocIsTcmalloc) {
#ifndef LT_TCMALLOC
  GTEST_SKIP() << "built without tcmalloc (LT_TCMALLOC off, under the sanitizers, or not found)";
#else
  void* tcmalloc = dlsym(RTLD_DEFAULT, "tc_malloc");
  ASSERT_NE(tcmalloc, nullptr) << "tcmalloc is not loaded";
  EXPECT_EQ(dlsym(RTLD_DEFAULT, "malloc"), tcmalloc) << "malloc binds to another library than tcmalloc";
#endif
}

}  // namespace
