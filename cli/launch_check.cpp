#include "cli/launch_check.h"

#include <cstdlib>
#include <string>

#include "core/util/error.h"

namespace lt {
namespace {

// The positive integer in environment variable `name`, or 0.
long from_environment(const char* name) {
  const char* text = std::getenv(name);
  if (!text) return 0;
  char* end = nullptr;
  const long value = std::strtol(text, &end, 10);
  return end != text && *end == '\0' && value > 0 ? value : 0;
}

}  // namespace

void check_launch(int mpi_world) {
  if (mpi_world != 1) return;
  // The launchers' own counts: torchrun, an srun step, a Slurm allocation,
  // Open MPI and PMI launchers.
  for (const char* name : {"WORLD_SIZE", "SLURM_STEP_NUM_TASKS", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE"}) {
    const long tasks = from_environment(name);
    if (tasks > 1)
      fail("this process is the only MPI rank, but " + std::string(name) + "=" + std::to_string(tasks) +
           " says the job has " + std::to_string(tasks) +
           ": the launcher started separate single-rank jobs that "
           "would all write one run_dir. Launch with `mpirun -np " +
           std::to_string(tasks) +
           " longtrain ...` (in a Slurm job: scripts/slurm/longtrain.sbatch, or srun --mpi=pmix), or unset " + name +
           " to run on one rank");
  }
}

}  // namespace lt
