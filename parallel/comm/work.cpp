#include "parallel/comm/work.h"

#include <sched.h>

#include <chrono>
#include <cstdio>
#include <thread>

#include "core/util/error.h"

namespace lt {
namespace {

std::string seconds_text(double seconds) {
  char buffer[32];
  std::snprintf(buffer, sizeof(buffer), "%g", seconds);
  return buffer;
}

}  // namespace

struct Work::State {
  Source source;
  std::function<bool()> ready;
  std::function<void()> finish;
  bool done = false;
};

Work::Work(Source source, std::function<bool()> ready, std::function<void()> finish)
    : state_(std::make_shared<State>(State{std::move(source), std::move(ready), std::move(finish)})) {}

bool Work::test() {
  if (!state_ || state_->done) return true;
  if (!state_->ready()) return false;
  state_->done = true;
  if (state_->finish) state_->finish();
  return true;
}

void Work::wait() {
  using clock = std::chrono::steady_clock;
  const auto start = clock::now();
  // Spin briefly (collectives of small tensors finish in microseconds), then
  // yield, then sleep: a rank waiting on a slow peer should not burn a core.
  for (int polls = 0; !test(); ++polls) {
    if (polls < 1000) continue;
    const double waited = std::chrono::duration<double>(clock::now() - start).count();
    const auto& s = state_->source;
    if (waited > s.timeout_s)
      fail("watchdog: " + s.op + " on group '" + s.group + "' (rank " + std::to_string(s.rank) + " of " +
           std::to_string(s.size) + ", world rank " + std::to_string(s.world_rank) + ") did not finish within " +
           seconds_text(s.timeout_s) +
           " s (parallel.timeout_s): another rank is stuck, dead or in a different collective");
    if (waited < 0.01) sched_yield();
    else std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
}

}  // namespace lt
