// Test-only fault injection: off unless the environment variable LT_FAULT
// names a fault: LT_FAULT=throw@1:3 makes world rank 1 throw in the middle
// of step 3, hang@1:3 makes it stop there forever. Tests use it to prove that
// one rank's failure ends the whole job with that rank's message, and that a
// stuck rank is reported by the others' watchdog.
#pragma once
#include <cstdint>

namespace lt {

// Called by the trainer mid-step; acts when LT_FAULT names this rank and step.
void inject_fault(int world_rank, int64_t step);

}  // namespace lt
