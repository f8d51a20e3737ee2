// One exception type for every error a user can cause or act on. It is thrown
// where the problem is found and caught once, at the command-line entry point,
// which prints its message as one line and exits non-zero.
#pragma once
#include <stdexcept>
#include <string>

namespace lt {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

[[noreturn]] inline void fail(const std::string& message) { throw Error(message); }

inline void check(bool ok, const std::string& message) {
  if (!ok) fail(message);
}

}  // namespace lt
