#include "core/data/passkey_corpus.h"

#include <algorithm>
#include <cmath>
#include <random>

#include "core/util/error.h"

namespace lt {
namespace {

// A generator per (seed, index): document i is the same whoever asks.
std::mt19937_64 generator_for(uint64_t seed, int64_t index) {
  std::seed_seq sequence{seed, static_cast<uint64_t>(index), uint64_t{0x9e3779b97f4a7c15ULL}};
  return std::mt19937_64(sequence);
}

int64_t uniform(std::mt19937_64& g, int64_t low, int64_t high) {  // inclusive
  return low + static_cast<int64_t>(g() % static_cast<uint64_t>(high - low + 1));
}

}  // namespace

PasskeyCorpus::PasskeyCorpus(const PasskeyConfig& config, int64_t vocab_size, uint64_t seed)
    : config_(config), vocab_size_(vocab_size), seed_(seed) {
  // The bank depends on the vocabulary only, so train and eval share it.
  auto g = generator_for(0x5e17e9ce, vocab_size);
  sentences_.resize(config.filler_sentences);
  for (auto& sentence : sentences_) {
    sentence.resize(uniform(g, 6, 16));
    for (auto& token : sentence) token = uniform(g, passkey_tokens::first_filler(config.digits), vocab_size - 1);
  }
}

PasskeySample PasskeyCorpus::sample(int64_t index, int64_t length, double depth) const {
  using namespace passkey_tokens;
  auto g = generator_for(seed_, index);
  std::vector<int64_t> key(config_.digits);
  for (int64_t place = 0; place < config_.digits; ++place) key[place] = kDigit0 + 10 * place + uniform(g, 0, 9);

  const int64_t filler = length - (2 * config_.digits + 6);
  LT_CHECK(filler >= 1, "passkey: " + std::to_string(length) + " tokens cannot hold a key of " +
                            std::to_string(config_.digits) + " digits and its question");
  const int64_t drawn = uniform(g, 0, filler);  // drawn either way: the filler after it is the same at every depth
  const int64_t before = depth < 0 ? drawn : std::llround(depth * static_cast<double>(filler));
  std::vector<int64_t> text;
  while (static_cast<int64_t>(text.size()) < filler) {
    const auto& sentence = sentences_[uniform(g, 0, static_cast<int64_t>(sentences_.size()) - 1)];
    text.insert(text.end(), sentence.begin(), sentence.end());
  }
  text.resize(filler);

  PasskeySample s;
  s.digits = config_.digits;
  s.tokens.reserve(length);
  s.tokens.push_back(kBos);
  s.tokens.insert(s.tokens.end(), text.begin(), text.begin() + before);
  s.tokens.push_back(kKey);
  s.tokens.insert(s.tokens.end(), key.begin(), key.end());
  s.tokens.push_back(kKey);
  s.tokens.insert(s.tokens.end(), text.begin() + before, text.end());
  s.tokens.push_back(kQuery);
  s.tokens.push_back(kKey);
  s.answer_start = static_cast<int64_t>(s.tokens.size());
  s.tokens.insert(s.tokens.end(), key.begin(), key.end());
  s.tokens.push_back(kEos);
  return s;
}

nlohmann::json PasskeyCorpus::fingerprint() const {
  return {{"data.source", "passkey"},
          {"train.seed", seed_},
          {"data.passkey.min_doc_len", config_.min_doc_len},
          {"data.passkey.max_doc_len", config_.max_doc_len},
          {"data.passkey.digits", config_.digits},
          {"data.passkey.filler_sentences", config_.filler_sentences},
          {"model.vocab_size", vocab_size_}};
}

std::vector<int64_t> PasskeyCorpus::document(int64_t index, int64_t max_length) const {
  // Lengths are log-uniform, long-tailed like real corpora: the many short
  // documents teach retrieval fast, the long ones carry it to full length.
  // They come from their own stream so sample() stays a function of (index, length).
  auto g = generator_for(seed_ ^ 0x1e9617ULL, index);
  const double u = static_cast<double>(g() >> 11) / static_cast<double>(1ULL << 53);
  const double low = std::log(static_cast<double>(config_.min_doc_len));
  const int64_t longest = std::max(config_.min_doc_len, std::min(config_.max_doc_len, max_length));
  const double high = std::log(static_cast<double>(longest) + 1.0);
  const int64_t length = static_cast<int64_t>(std::exp(low + u * (high - low)));
  return sample(index, std::clamp(length, config_.min_doc_len, longest)).tokens;
}

}  // namespace lt
