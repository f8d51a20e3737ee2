#include "core/data/document_source.h"

#include <algorithm>
#include <mutex>
#include <numeric>
#include <random>

#include "core/data/indexed_dataset.h"
#include "core/data/passkey_corpus.h"
#include "core/util/error.h"

namespace lt {
namespace {

// Documents of an indexed dataset, split into train / held-out ranges and
// reshuffled every epoch from the seed.
class IndexedSource : public DocumentSource {
 public:
  IndexedSource(const DataConfig& data, int64_t vocab_size, uint64_t seed, Split split)
      : dataset_(data.path), vocab_size_(vocab_size), seed_(seed), path_(data.path) {
    const int64_t total = dataset_.num_documents();
    const int64_t held_out = data.eval_fraction > 0 ? std::max<int64_t>(1, total * data.eval_fraction) : 0;
    first_ = split == Split::Train ? 0 : total - held_out;
    count_ = split == Split::Train ? total - held_out : held_out;
    if (count_ <= 0)
      fail(path_ + ": " + std::to_string(total) + " documents leave none for " +
           (split == Split::Train ? "training" : "evaluation") + "; adjust data.eval_fraction");
  }

  std::vector<int64_t> document(int64_t index, int64_t /*max_length*/) const override {
    const int64_t epoch = index / count_, local = index % count_;
    std::vector<int64_t> tokens;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (epoch != cached_epoch_) shuffle(epoch);
      tokens = dataset_.document(first_ + order_[local]);
    }
    for (int64_t t : tokens)
      if (t < 0 || t >= vocab_size_)
        fail(path_ + ".bin: token id " + std::to_string(t) + " is outside model.vocab_size=" +
             std::to_string(vocab_size_) + "; the data was tokenized for another vocabulary");
    return tokens;
  }

 private:
  void shuffle(int64_t epoch) const {
    order_.resize(count_);
    std::iota(order_.begin(), order_.end(), 0);
    std::seed_seq sequence{seed_, static_cast<uint64_t>(epoch)};
    std::mt19937_64 g(sequence);
    // Fisher-Yates with our own draw: std::shuffle's use of the engine is not specified.
    for (int64_t i = count_ - 1; i > 0; --i) std::swap(order_[i], order_[g() % static_cast<uint64_t>(i + 1)]);
    cached_epoch_ = epoch;
  }

  IndexedDataset dataset_;
  int64_t vocab_size_;
  uint64_t seed_;
  std::string path_;
  int64_t first_ = 0, count_ = 0;
  mutable std::mutex mutex_;
  mutable int64_t cached_epoch_ = -1;
  mutable std::vector<int64_t> order_;
};

}  // namespace

std::unique_ptr<DocumentSource> make_document_source(const DataConfig& data, int64_t vocab_size, uint64_t seed,
                                                     Split split) {
  // Held-out data comes from a disjoint stream of the same distribution.
  const uint64_t stream = split == Split::Train ? seed : seed ^ 0xe7a1e7a1e7a1ULL;
  if (data.source == "indexed") return std::make_unique<IndexedSource>(data, vocab_size, stream, split);
  return std::make_unique<PasskeyCorpus>(data.passkey, vocab_size, stream);
}

}  // namespace lt
