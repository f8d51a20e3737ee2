#include "core/util/fault_injection.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <set>
#include <string>
#include <thread>

#include "core/util/error.h"

namespace lt {

std::string fault_at(int world_rank, int64_t step) {
  const char* spec = std::getenv("LT_FAULT");
  if (!spec || !*spec) return "";
  char kind[16] = {};
  int rank = -1;
  long long at_step = -1;
  static const std::set<std::string> kinds = {"throw", "hang", "exit", "nan", "diskfull", "hangsave", "dropgrad"};
  if (std::sscanf(spec, "%15[a-z]@%d:%lld", kind, &rank, &at_step) != 3 || !kinds.count(kind))
    fail(std::string("LT_FAULT='") + spec +
         "': expected KIND@RANK:STEP, KIND one of throw, hang, exit, nan, diskfull, hangsave, dropgrad");
  return rank == world_rank && at_step == step ? kind : "";
}

void hang_forever() {
  for (;;) std::this_thread::sleep_for(std::chrono::hours(1));
}

bool inject_fault(int world_rank, int64_t step) {
  const std::string what = fault_at(world_rank, step);
  if (what == "nan") return true;
  if (what == "exit") std::_Exit(1);
  if (what == "hang") hang_forever();
  if (what != "throw") return false;
  fail("injected fault (LT_FAULT=" + std::string(std::getenv("LT_FAULT")) + ") on rank " + std::to_string(world_rank) +
       " at step " + std::to_string(step));
}

}  // namespace lt
