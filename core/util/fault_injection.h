// Test-only fault injection: off unless the environment variable LT_FAULT
// names a fault KIND@RANK:STEP, which world rank RANK meets in the middle of
// step STEP (step 0: while setting up, before the ranks agree on the recipe):
//   throw  an error (the job must end with its message)
//   hang   stops there forever (the others' watchdog must name the collective)
//   exit   the process ends at once, exit code 1, no message (a crash)
//   nan    its loss and so every gradient become NaN (the step is skipped)
//   diskfull  writing its part of step STEP's checkpoint fails as on a full disk
//   hangsave  writing its part of step STEP's checkpoint never ends (a stuck file system)
//   dropgrad  its first gradient bucket (of a replica set of several ranks)
//             enters step STEP's reduction as zeros
//             (a silent wrong result, which `longtrain check` must catch)
// Tests use it to prove what the job does under each fault.
#pragma once
#include <cstdint>
#include <string>

namespace lt {

// The kind of fault LT_FAULT names for this rank and step, or "".
std::string fault_at(int world_rank, int64_t step);

[[noreturn]] void hang_forever();

// Called by the trainer mid-step; acts when LT_FAULT names this rank and
// step. Returns true when the step's loss must be made NaN.
bool inject_fault(int world_rank, int64_t step);

}  // namespace lt
