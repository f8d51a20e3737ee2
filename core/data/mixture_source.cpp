#include "core/data/mixture_source.h"

#include <algorithm>
#include <cmath>
#include <mutex>
#include <numeric>
#include <random>

#include "core/util/checksum.h"
#include "core/util/error.h"

namespace lt {

Interleave::Interleave(const std::vector<double>& weights) {
  double rest = std::accumulate(weights.begin(), weights.end(), 0.0);
  for (double w : weights) {
    fraction_.push_back(rest > 0 ? w / rest : 1.0);
    rest -= w;
  }
}

std::pair<int, int64_t> Interleave::operator()(int64_t i) const {
  const int last = static_cast<int>(fraction_.size()) - 1;
  for (int p = 0; p < last; ++p) {
    const auto taken = [&](int64_t n) { return static_cast<int64_t>(std::floor(fraction_[p] * n + 0.5)); };
    const int64_t before = taken(i);  // indices part p took of the first i
    if (taken(i + 1) > before) return {p, before};
    i -= before;  // the index among what the later parts share
  }
  return {last, i};
}

namespace {

// Documents of one dataset, reshuffled every epoch from (seed, epoch).
class ShuffledPool {
 public:
  ShuffledPool(std::vector<int64_t> documents, uint64_t seed) : documents_(std::move(documents)), seed_(seed) {}

  bool empty() const { return documents_.empty(); }
  int64_t at(int64_t j) const {
    const auto count = static_cast<int64_t>(documents_.size());
    std::lock_guard<std::mutex> lock(mutex_);
    if (j / count != epoch_) shuffle(j / count);
    return documents_[order_[j % count]];
  }

 private:
  void shuffle(int64_t epoch) const {
    order_.resize(documents_.size());
    std::iota(order_.begin(), order_.end(), 0);
    std::seed_seq sequence{seed_, static_cast<uint64_t>(epoch)};
    std::mt19937_64 g(sequence);
    // Fisher-Yates with our own draw: std::shuffle's use of the engine is not specified.
    for (auto i = static_cast<int64_t>(order_.size()) - 1; i > 0; --i)
      std::swap(order_[i], order_[g() % static_cast<uint64_t>(i + 1)]);
    epoch_ = epoch;
  }

  std::vector<int64_t> documents_;
  uint64_t seed_;
  mutable std::mutex mutex_;
  mutable int64_t epoch_ = -1;
  mutable std::vector<int64_t> order_;
};

double mean(const std::vector<int64_t>& lengths) {
  return lengths.empty() ? 0.0
                         : static_cast<double>(std::accumulate(lengths.begin(), lengths.end(), int64_t{0})) /
                               static_cast<double>(lengths.size());
}

}  // namespace

// Draw long documents with the probability p that gives them `share` of the
// tokens: p L / (p L + (1 - p) S) = share. Only ever upward.
double long_draw_probability(int64_t shorts, int64_t longs, double short_mean, double long_mean, double share) {
  if (shorts + longs == 0) return 0;
  const double natural = static_cast<double>(longs) / static_cast<double>(shorts + longs);
  if (longs == 0 || shorts == 0 || share <= long_token_share(natural, short_mean, long_mean)) return natural;
  return share * short_mean / (share * short_mean + (1 - share) * long_mean);
}

double long_token_share(double p, double short_mean, double long_mean) {
  const double total = p * long_mean + (1 - p) * short_mean;
  return total > 0 ? p * long_mean / total : 0;
}

struct MixtureSource::Domain {
  std::string path;
  IndexedDataset dataset;
  std::unique_ptr<ShuffledPool> short_pool, long_pool;
  std::unique_ptr<Interleave> by_length;  // 0: short, 1: long
  double mean_length = 0;                 // of the documents drawn
  int64_t tokens = 0, empty = 0;          // of this split's documents; empty ones are skipped

  Domain(const std::string& prefix, const DataConfig& data, uint64_t seed, Split split, int index)
      : path(prefix), dataset(prefix) {
    const int64_t total = dataset.num_documents();
    const int64_t held_out = data.eval_fraction > 0 ? std::max<int64_t>(1, total * data.eval_fraction) : 0;
    const int64_t first = split == Split::Train ? 0 : total - held_out;
    const int64_t count = split == Split::Train ? total - held_out : held_out;
    if (count <= 0)
      fail(path + ": " + std::to_string(total) + " documents leave none for " +
           (split == Split::Train ? "training" : "evaluation") + "; adjust data.eval_fraction");
    const int64_t threshold = split == Split::Train ? data.upsample_long.min_length : 0;
    std::vector<int64_t> shorts, longs, short_lengths, long_lengths;
    for (int64_t d = first; d < first + count; ++d) {
      const int64_t length = dataset.document_length(d);
      if (length == 0) {
        ++empty;
        continue;
      }
      tokens += length;
      const bool is_long = threshold > 0 && length >= threshold;
      (is_long ? longs : shorts).push_back(d);
      (is_long ? long_lengths : short_lengths).push_back(length);
    }
    if (tokens == 0)
      fail(path + ": its " + std::to_string(count) + " " + (split == Split::Train ? "training" : "evaluation") +
           " documents hold no tokens: tokenize the data again, or drop this dataset from data.path / data.mixture");
    const double short_mean = mean(short_lengths), long_mean = mean(long_lengths);
    const double long_fraction =
        long_draw_probability(static_cast<int64_t>(shorts.size()), static_cast<int64_t>(longs.size()), short_mean,
                              long_mean, data.upsample_long.share);
    mean_length = long_fraction * long_mean + (1 - long_fraction) * short_mean;
    const uint64_t domain_seed = seed + 0x9e3779b97f4a7c15ULL * static_cast<uint64_t>(index + 1);
    short_pool = std::make_unique<ShuffledPool>(std::move(shorts), domain_seed);
    long_pool = std::make_unique<ShuffledPool>(std::move(longs), domain_seed ^ 0x10f6ULL);
    by_length = std::make_unique<Interleave>(std::vector<double>{1 - long_fraction, long_fraction});
  }

  int64_t document(int64_t j) const {
    const auto [pool, k] = (*by_length)(j);
    return (pool == 1 ? long_pool : short_pool)->at(k);
  }
};

MixtureSource::MixtureSource(const DataConfig& data, int64_t vocab_size, uint64_t seed, Split split)
    : vocab_size_(vocab_size) {
  std::vector<MixtureEntry> entries = data.mixture;
  if (entries.empty()) entries.push_back({data.path, 1.0});
  // Documents per dataset in proportion to its tokens' weight over its mean
  // document length: the weights are shares of the tokens.
  std::vector<double> per_document;
  for (size_t d = 0; d < entries.size(); ++d) {
    domains_.push_back(std::make_unique<Domain>(entries[d].path, data, seed, split, static_cast<int>(d)));
    per_document.push_back(entries[d].weight / std::max(1.0, domains_.back()->mean_length));
  }
  by_domain_ = std::make_unique<Interleave>(per_document);
  auto datasets = nlohmann::json::array();
  for (size_t d = 0; d < entries.size(); ++d)
    datasets.push_back({{"weight", entries[d].weight},
                        {"documents", domains_[d]->dataset.num_documents()},
                        {"tokens", domains_[d]->tokens}});
  fingerprint_ = {
      {"data.source", "indexed"},
      {"train.seed", seed},
      {"data.eval_fraction", data.eval_fraction},
      {"data.upsample_long", {{"min_length", data.upsample_long.min_length}, {"share", data.upsample_long.share}}},
      {"data.path / data.mixture", datasets},
      {"model.vocab_size", vocab_size}};
}

// The datasets by content (not path: a moved dataset resumes); the index
// files are hashed when first asked, not by every source (evaluation's).
nlohmann::json MixtureSource::fingerprint() const {
  auto& datasets = fingerprint_["data.path / data.mixture"];
  for (size_t d = 0; d < domains_.size(); ++d)
    if (!datasets[d].contains("index_xxh3")) datasets[d]["index_xxh3"] = file_checksum(domains_[d]->path + ".idx");
  return fingerprint_;
}

MixtureSource::~MixtureSource() = default;

std::vector<int64_t> MixtureSource::document(int64_t index, int64_t /*max_length*/) const {
  const auto [d, j] = (*by_domain_)(index);
  const Domain& domain = *domains_[d];
  auto tokens = domain.dataset.document(domain.document(j));
  for (int64_t t : tokens)
    if (t < 0 || t >= vocab_size_)
      fail(domain.path + ".bin: token id " + std::to_string(t) + " is outside model.vocab_size=" +
           std::to_string(vocab_size_) + "; the data was tokenized for another vocabulary");
  return tokens;
}

}  // namespace lt
