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

// Thrown by every rank of a job alike, when all of them found (or were told
// by rank 0) the same error: rank 0 prints it, the others stay quiet, and
// all exit with the user-error code, so the job ends without an abort.
class AgreedError : public Error {
 public:
  AgreedError(const std::string& message, bool print) : Error(message), print(print) {}
  bool print;
};

[[noreturn]] inline void fail(const std::string& message) { throw Error(message); }

// `text` (a user's value, quoted in a message) with control characters
// escaped, so the message stays one line.
inline std::string printable(const std::string& text) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (unsigned char c : text) {
    if (c == '\n') out += "\\n";
    else if (c < 0x20 || c == 0x7f) out += std::string("\\x") + digits[c >> 4] + digits[c & 15];
    else out += static_cast<char>(c);
  }
  return out;
}

}  // namespace lt

// Fails with `message` unless `ok`. The message (often built by
// concatenation) is evaluated only on failure, so checks cost nothing in
// hot paths.
#define LT_CHECK(ok, message)       \
  do {                              \
    if (!(ok)) ::lt::fail(message); \
  } while (false)
