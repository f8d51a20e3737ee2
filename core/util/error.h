// One exception type for every error a user can cause or act on. It is thrown
// where the problem is found and caught once, at the command-line entry point,
// which prints its message as one line and exits non-zero.
#pragma once
#include <cstddef>
#include <cstdint>
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

// The length of the well-formed UTF-8 sequence at text[i], or 0 where
// there is none (no overlong forms, surrogates or code points past U+10FFFF).
inline size_t utf8_sequence(const std::string& text, size_t i) {
  const auto byte = [&](size_t k) { return static_cast<unsigned char>(text[k]); };
  const unsigned char lead = byte(i);
  const size_t length = lead < 0x80                   ? 1
                        : lead >= 0xc2 && lead < 0xe0 ? 2
                        : lead >= 0xe0 && lead < 0xf0 ? 3
                        : lead >= 0xf0 && lead < 0xf5 ? 4
                                                      : 0;
  if (length == 0 || i + length > text.size()) return 0;
  uint32_t code = length == 1 ? lead : lead & (0xffu >> (length + 1));
  for (size_t k = 1; k < length; ++k) {
    if ((byte(i + k) & 0xc0) != 0x80) return 0;
    code = code << 6 | (byte(i + k) & 0x3f);
  }
  const uint32_t smallest[] = {0, 0, 0x80, 0x800, 0x10000};
  if (code < smallest[length] || code > 0x10ffff || (code >= 0xd800 && code < 0xe000)) return 0;
  return length;
}

// `text` (a user's value, quoted in a message) with control characters and
// bytes that are not UTF-8 escaped (\xNN), so the message stays one line of
// text that JSON and terminals can hold.
inline std::string printable(const std::string& text) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < text.size();) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    const size_t length = utf8_sequence(text, i);
    if (c == '\n') out += "\\n";
    else if (length == 0 || c < 0x20 || c == 0x7f) out += std::string("\\x") + digits[c >> 4] + digits[c & 15];
    else out += text.substr(i, length);
    i += length ? length : 1;
  }
  return out;
}

// printable(text) cut to its first `limit` bytes (whole characters) and
// "...": a user's value quoted in a message, whatever its size.
inline std::string excerpt(const std::string& text, size_t limit = 200) {
  std::string out = printable(text);
  if (out.size() <= limit) return out;
  size_t cut = limit;
  while (cut > 0 && (static_cast<unsigned char>(out[cut]) & 0xc0) == 0x80) --cut;  // not inside a character
  return out.substr(0, cut) + "...";
}

}  // namespace lt

// Fails with `message` unless `ok`. The message (often built by
// concatenation) is evaluated only on failure, so checks cost nothing in
// hot paths.
#define LT_CHECK(ok, message)       \
  do {                              \
    if (!(ok)) ::lt::fail(message); \
  } while (false)
