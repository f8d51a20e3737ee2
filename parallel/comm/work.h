// A collective in flight. `wait` polls it to completion under the watchdog:
// if it has not finished within the communicator's timeout, it throws an
// lt::Error naming the operation, the group and the rank, instead of hanging.
#pragma once
#include <functional>
#include <memory>
#include <string>

namespace lt {

class Work {
 public:
  struct Source {  // for the watchdog's message
    std::string op, group;
    int rank = 0, size = 1, world_rank = 0;
    double timeout_s = 600;
  };

  Work() = default;  // already complete
  // `ready` makes progress and says whether the operation is complete;
  // `finish` runs once after it is (copy-outs, scaling, stream ordering).
  Work(Source source, std::function<bool()> ready, std::function<void()> finish = {});

  // Progress without blocking; true once complete (and finished).
  bool test();
  // Blocks until complete; throws lt::Error when the watchdog fires.
  void wait();

 private:
  struct State;
  std::shared_ptr<State> state_;
};

}  // namespace lt
