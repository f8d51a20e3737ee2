#include "core/data/dataset_stats.h"

#include <algorithm>
#include <iomanip>
#include <sstream>

#include "core/data/mixture_source.h"
#include "core/util/logger.h"

namespace lt {
namespace {

int bucket_of(int64_t length) {
  int b = 0;
  while ((int64_t{2} << b) <= length) ++b;
  return b;
}

std::string tokens_text(int64_t n) {
  if (n >= 1 << 20 && n % (1 << 20) == 0) return std::to_string(n >> 20) + "M";
  if (n >= 1 << 10 && n % (1 << 10) == 0) return std::to_string(n >> 10) + "K";
  return std::to_string(n);
}

std::string percent(double part, double whole) { return formatted("%5.1f%%", whole > 0 ? 100 * part / whole : 0.0); }

}  // namespace

DatasetStats dataset_stats(const IndexedDataset& dataset, const std::string& path, int64_t min_length) {
  DatasetStats s;
  s.path = path;
  s.long_tokens.assign(kLongLengths.size(), 0);
  for (int64_t d = 0; d < dataset.num_documents(); ++d) {
    const int64_t length = dataset.document_length(d);
    if (length == 0) {
      ++s.empty;
      continue;
    }
    ++s.documents;
    s.tokens += length;
    s.longest = std::max(s.longest, length);
    const auto b = static_cast<size_t>(bucket_of(length));
    if (s.bucket_documents.size() <= b) s.bucket_documents.resize(b + 1), s.bucket_tokens.resize(b + 1);
    ++s.bucket_documents[b];
    s.bucket_tokens[b] += length;
    for (size_t i = 0; i < kLongLengths.size(); ++i)
      if (length >= kLongLengths[i]) s.long_tokens[i] += length;
    if (min_length > 0 && length >= min_length) ++s.min_length_documents, s.min_length_tokens += length;
  }
  return s;
}

std::string describe(const DatasetStats& s) {
  std::ostringstream out;
  out << s.path << ": " << s.documents << " documents, " << s.tokens << " tokens";
  if (s.documents > 0)
    out << " (mean " << formatted("%.0f", static_cast<double>(s.tokens) / static_cast<double>(s.documents))
        << ", longest " << s.longest << ")";
  if (s.empty > 0) out << ", " << s.empty << " empty documents (skipped in training)";
  out << "\n";
  if (s.documents == 0) return out.str();
  out << "  tokens in documents of at least";
  for (size_t i = 0; i < kLongLengths.size(); ++i)
    out << (i ? ", " : " ") << tokens_text(kLongLengths[i]) << ": "
        << percent(static_cast<double>(s.long_tokens[i]), static_cast<double>(s.tokens));
  out << "\n  length          documents   share of tokens\n";
  const int64_t most = *std::max_element(s.bucket_tokens.begin(), s.bucket_tokens.end());
  for (size_t b = 0; b < s.bucket_documents.size(); ++b) {
    if (s.bucket_documents[b] == 0) continue;
    std::ostringstream range;  // (not string + string: GCC 12 warns falsely of an overflow there)
    range << "[" << tokens_text(int64_t{1} << b) << ", " << tokens_text(int64_t{2} << b) << ")";
    const auto bar = static_cast<size_t>(30.0 * static_cast<double>(s.bucket_tokens[b]) / static_cast<double>(most));
    out << "  " << std::left << std::setw(16) << range.str() << std::right << std::setw(10) << s.bucket_documents[b]
        << "       " << percent(static_cast<double>(s.bucket_tokens[b]), static_cast<double>(s.tokens)) << " "
        << std::string(std::max<size_t>(bar, 1), '#') << "\n";
  }
  return out.str();
}

std::string describe_mixture(const DataConfig& data, const std::vector<DatasetStats>& sources) {
  double total_weight = 0;
  std::vector<double> weights;
  for (size_t i = 0; i < sources.size(); ++i) {
    weights.push_back(data.mixture.empty() ? 1.0 : data.mixture[i].weight);
    total_weight += weights.back();
  }
  const int64_t min_length = data.upsample_long.min_length;
  std::ostringstream out;
  out << "mixture: each source's share of the training tokens";
  if (min_length > 0)
    out << "; tokens in its documents of at least " << tokens_text(min_length) << ", natural -> drawn "
        << "(data.upsample_long.share " << data.upsample_long.share << ")";
  out << "\n";
  for (size_t i = 0; i < sources.size(); ++i) {
    const auto& s = sources[i];
    out << "  " << percent(weights[i], total_weight) << "  " << s.path;
    if (min_length > 0) {
      const int64_t longs = s.min_length_documents, long_tokens = s.min_length_tokens;
      const int64_t shorts = s.documents - longs, short_tokens = s.tokens - long_tokens;
      const double short_mean = shorts ? static_cast<double>(short_tokens) / static_cast<double>(shorts) : 0;
      const double long_mean = longs ? static_cast<double>(long_tokens) / static_cast<double>(longs) : 0;
      const double p = long_draw_probability(shorts, longs, short_mean, long_mean, data.upsample_long.share);
      out << "  " << percent(static_cast<double>(long_tokens), static_cast<double>(s.tokens)) << " -> "
          << percent(long_token_share(p, short_mean, long_mean), 1.0);
    }
    out << "\n";
  }
  return out.str();
}

}  // namespace lt
