// What schedulers send before they preempt a job: SIGTERM (Slurm, Kubernetes)
// or a configured SIGUSR1. The handler only records the signal; the trainer
// agrees on it with every rank at the next step boundary, saves a
// checkpoint and exits 0, so the next job resumes where this one stopped.
#pragma once

namespace lt {

// Installs the handler for SIGTERM and SIGUSR1 (idempotent).
void watch_stop_signals();

// The signal received since watch_stop_signals, or 0.
int stop_signal();

}  // namespace lt
