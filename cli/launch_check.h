// A job launched wrong: one MPI rank while the launcher says the job has
// more (torchrun's WORLD_SIZE, Slurm's task count, the MPI launcher's own
// size): each process would then be a single-rank job of its own, every one
// writing the same run_dir. Such a launch ends with one line saying how to
// launch instead.
#pragma once

namespace lt {

// `mpi_world`: the ranks MPI gave this job.
void check_launch(int mpi_world);

}  // namespace lt
