// What long-context users choose a data mixture by (`longtrain data`): a
// dataset's documents and tokens, its length histogram in powers of two,
// and the share of its tokens in documents of at least 8K, 32K and 128K;
// for a recipe's mixture, each source's share of the training tokens and
// of long documents within it after data.upsample_long.
#pragma once
#include <string>
#include <vector>

#include "core/config/config.h"
#include "core/data/indexed_dataset.h"

namespace lt {

struct DatasetStats {
  std::string path;
  int64_t documents = 0, empty = 0, tokens = 0, longest = 0;
  // Bucket b: documents of [2^b, 2^(b+1)) tokens, and their tokens.
  std::vector<int64_t> bucket_documents, bucket_tokens;
  // Tokens in documents of at least kLongLengths[i] tokens.
  std::vector<int64_t> long_tokens;
  // Documents of at least `min_length` tokens (data.upsample_long), and their tokens.
  int64_t min_length_documents = 0, min_length_tokens = 0;
};

inline const std::vector<int64_t> kLongLengths = {8 << 10, 32 << 10, 128 << 10};

DatasetStats dataset_stats(const IndexedDataset& dataset, const std::string& path, int64_t min_length = 0);
std::string describe(const DatasetStats& stats);

// The recipe's training sources (data.path or data.mixture): each one's
// weight as a share of the tokens and, with data.upsample_long, the share of
// its tokens in documents of at least min_length, natural and as drawn.
std::string describe_mixture(const DataConfig& data, const std::vector<DatasetStats>& sources);

}  // namespace lt
