// The built-in long-context corpus: filler text with a passkey hidden at a
// random depth and asked for at the end (the passkey-retrieval test of
// Landmark Attention / LongLoRA), so training and tests need no downloads.
//
//   <bos> filler.. <key> d1..dn <key> filler.. <query> <key> d1..dn <eos>
//
// As in the original prompt ("The pass key is 71432. ... What is the pass
// key? The pass key is"), the question ends with the phrase that introduced
// the key. Filler is drawn from a fixed bank of "sentences" (as the original
// repeats "The grass is green. The sky is blue. ..."), so it is learnable and
// the loss falls; the digits can only be predicted by retrieving them.
//
// Each place of the key has its own ten digit tokens (place i uses
// kDigit0 + 10 i .. kDigit0 + 10 i + 9), so answering place i means finding
// the one token of its alphabet anywhere in the context: a needle lookup a
// small model learns in minutes on a CPU, where copying a key written in one
// shared alphabet needs induction heads that take far longer to form.
#pragma once
#include "core/data/document_source.h"

namespace lt {

namespace passkey_tokens {
constexpr int64_t kPad = 0, kBos = 1, kEos = 2, kKey = 3, kQuery = 4, kDigit0 = 5;
// Filler tokens follow the digit alphabets of every place.
constexpr int64_t first_filler(int64_t digits) { return kDigit0 + 10 * digits; }
}  // namespace passkey_tokens

struct PasskeySample {
  std::vector<int64_t> tokens;
  int64_t answer_start = 0;  // index of the first answer digit (after <query> <key>)
  int64_t digits = 0;
};

class PasskeyCorpus : public DocumentSource {
 public:
  PasskeyCorpus(const PasskeyConfig& config, int64_t vocab_size, uint64_t seed);

  // Documents of log-uniform random length in [min_doc_len, min(max_doc_len, max_length)].
  std::vector<int64_t> document(int64_t index, int64_t max_length) const override;
  nlohmann::json fingerprint() const override;
  // One sample of exactly `length` tokens (evaluation at a given context
  // length), the key at `depth` (0: start of the filler, 1: its end; below 0:
  // a random depth). The filler and key do not depend on the depth.
  PasskeySample sample(int64_t index, int64_t length, double depth = -1) const;

 private:
  PasskeyConfig config_;
  int64_t vocab_size_;
  uint64_t seed_;
  std::vector<std::vector<int64_t>> sentences_;
};

}  // namespace lt
