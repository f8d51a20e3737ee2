#include "core/util/fault_injection.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

#include "core/util/error.h"

namespace lt {

void inject_fault(int world_rank, int64_t step) {
  const char* spec = std::getenv("LT_FAULT");
  if (!spec || !*spec) return;
  char kind[16] = {};
  int rank = -1;
  long long at_step = -1;
  if (std::sscanf(spec, "%15[a-z]@%d:%lld", kind, &rank, &at_step) != 3 ||
      (std::string(kind) != "throw" && std::string(kind) != "hang"))
    fail(std::string("LT_FAULT='") + spec + "': expected throw@RANK:STEP or hang@RANK:STEP");
  if (rank != world_rank || at_step != step) return;
  if (std::string(kind) == "hang")
    for (;;) std::this_thread::sleep_for(std::chrono::hours(1));
  fail("injected fault (LT_FAULT=" + std::string(spec) + ") on rank " + std::to_string(world_rank) + " at step " +
       std::to_string(step));
}

}  // namespace lt
