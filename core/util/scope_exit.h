// Runs a function when its scope ends, by return or by exception: what must
// follow a piece of work whatever becomes of it.
#pragma once
#include <utility>

namespace lt {

template <class F>
class ScopeExit {
 public:
  explicit ScopeExit(F fn) : fn_(std::move(fn)) {}
  ~ScopeExit() { fn_(); }
  ScopeExit(const ScopeExit&) = delete;
  ScopeExit& operator=(const ScopeExit&) = delete;

 private:
  F fn_;
};

}  // namespace lt
