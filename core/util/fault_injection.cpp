#include "core/util/fault_injection.h"

#include <cstdio>
#include <cstdlib>
#include <string>

#include "core/util/error.h"

namespace lt {

void inject_fault(int world_rank, int64_t step) {
  const char* spec = std::getenv("LT_FAULT");
  if (!spec || !*spec) return;
  int rank = -1;
  long long at_step = -1;
  if (std::sscanf(spec, "throw@%d:%lld", &rank, &at_step) != 2)
    fail(std::string("LT_FAULT='") + spec + "': expected throw@RANK:STEP");
  if (rank == world_rank && at_step == step)
    fail("injected fault (LT_FAULT=" + std::string(spec) + ") on rank " + std::to_string(world_rank) + " at step " +
         std::to_string(step));
}

}  // namespace lt
