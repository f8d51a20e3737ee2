// Megatron datasets as one document stream: a weighted mixture of datasets
// (weights are shares of the tokens, as Megatron's blend), with per-dataset
// length upsampling (Fu et al. 2024: long documents drawn more often within
// each dataset, the datasets' shares unchanged). One dataset is a mixture
// of one.
//
// Empty documents (Megatron data often holds some) are skipped.
//
// Document i is a function of i and the seed alone, so a data position is
// one integer and resuming is exact: index i goes to a dataset by a fixed
// interleaving (the running count of every dataset stays within about one
// document of its target, as with Megatron's blending indices),
// within the dataset to its long or short documents the same way, and then
// to a document of that pool, reshuffled every epoch from the seed.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "core/data/document_source.h"
#include "core/data/indexed_dataset.h"

namespace lt {

// Index i of a stream shared by weighted parts -> (part, index within it),
// without tables: part 0 takes index i when round(f i) steps up at i, with
// f its share (a Beatty sequence); the rest of the stream is shared the
// same way by the other parts. Every prefix of the stream holds each part's
// share to within half an index per part before it, and never drifts.
class Interleave {
 public:
  explicit Interleave(const std::vector<double>& weights);
  std::pair<int, int64_t> operator()(int64_t i) const;

 private:
  std::vector<double> fraction_;  // part p's share of what parts p.. take
};

// Length upsampling within a dataset of `shorts` and `longs` documents (of
// mean lengths short_mean and long_mean): the probability of drawing a long
// document that gives long documents `share` of the tokens drawn, or their
// natural rate when that is higher or either kind is missing.
double long_draw_probability(int64_t shorts, int64_t longs, double short_mean, double long_mean, double share);
// The share of the tokens drawn that long documents carry when drawn with
// probability p.
double long_token_share(double p, double short_mean, double long_mean);

class MixtureSource : public DocumentSource {
 public:
  // Train: each dataset's first documents; Eval: its last data.eval_fraction,
  // drawn without upsampling.
  MixtureSource(const DataConfig& data, int64_t vocab_size, uint64_t seed, Split split);
  ~MixtureSource() override;

  std::vector<int64_t> document(int64_t index, int64_t max_length) const override;
  nlohmann::json fingerprint() const override;

 private:
  struct Domain;
  std::vector<std::unique_ptr<Domain>> domains_;
  std::unique_ptr<Interleave> by_domain_;
  int64_t vocab_size_;
  mutable nlohmann::json fingerprint_;
};

}  // namespace lt
