// The mixture of Megatron datasets: token shares as weighted, long documents
// upsampled within their dataset only, measured over a large sample; the
// stream is a function of the index and seed (so resuming is exact), and
// held-out documents never appear in training.
#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <random>
#include <set>

#include "core/data/dataset_stats.h"
#include "core/data/mixture_source.h"
#include "core/util/logger.h"
#include "tests/support/megatron_writer.h"
#include "tests/support/reference.h"

namespace lt {
namespace {

constexpr int64_t kVocab = 1000;

// Dataset `first_id`: documents whose first token is their id, then filler;
// `long_every`-th document is long (400-600 tokens), the others 20-60.
std::string write_dataset(const std::string& dir, const std::string& name, int64_t documents, int64_t first_id,
                          int64_t long_every) {
  std::mt19937 g(static_cast<unsigned>(first_id + 1));
  std::vector<std::vector<std::vector<int64_t>>> docs(documents);
  for (int64_t d = 0; d < documents; ++d) {
    const bool is_long = long_every > 0 && d % long_every == 0;
    std::vector<int64_t> tokens(is_long ? 400 + g() % 201 : 20 + g() % 41, 900 + d % 100);
    tokens[0] = first_id + d;
    docs[d] = {tokens};
  }
  const std::string prefix = dir + "/" + name;
  testing::write_megatron_dataset(prefix, docs, 4);
  return prefix;
}

struct Sample {
  std::map<int, double> tokens;  // by dataset (0: ids below 400)
  double long_tokens_a = 0;      // tokens of dataset 0 in documents >= 300
  std::set<int64_t> ids;
};

Sample draw(const DocumentSource& source, int64_t first, int64_t count) {
  Sample s;
  for (int64_t i = first; i < first + count; ++i) {
    const auto doc = source.document(i, 1 << 20);
    const int dataset = doc[0] < 400 ? 0 : 1;
    s.tokens[dataset] += static_cast<double>(doc.size());
    if (dataset == 0 && doc.size() >= 300) s.long_tokens_a += static_cast<double>(doc.size());
    s.ids.insert(doc[0]);
  }
  return s;
}

class Mixture : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string dir = testing::scratch_dir("mixture_test", "data");
    data.source = DataSourceKind::indexed;
    data.eval_fraction = 0.05;
    data.mixture = {{write_dataset(dir, "a", 400, 0, 10), 0.3}, {write_dataset(dir, "b", 300, 400, 0), 0.7}};
  }
  DataConfig data;
};

TEST_F(Mixture, TokenSharesFollowTheWeights) {
  const MixtureSource source(data, kVocab, 7, Split::Train);
  const auto s = draw(source, 0, 20000);
  const double a = s.tokens.at(0) / (s.tokens.at(0) + s.tokens.at(1));
  EXPECT_NEAR(a, 0.3, 0.01);
  // Dataset a's long documents keep their natural share of its tokens:
  // 1 in 10 documents of ~500 tokens against ~40: 500 / (500 + 9 x 40).
  EXPECT_NEAR(s.long_tokens_a / s.tokens.at(0), 500.0 / (500 + 9 * 40), 0.03);
}

TEST_F(Mixture, LongDocumentsUpsampledWithinTheirDataset) {
  data.upsample_long = {300, 0.8};
  const MixtureSource source(data, kVocab, 7, Split::Train);
  const auto s = draw(source, 0, 20000);
  EXPECT_NEAR(s.long_tokens_a / s.tokens.at(0), 0.8, 0.02);
  EXPECT_NEAR(s.tokens.at(0) / (s.tokens.at(0) + s.tokens.at(1)), 0.3, 0.01);  // the mix unchanged
}

TEST_F(Mixture, DocumentIDependsOnlyOnIAndTheSeed) {
  const MixtureSource one(data, kVocab, 7, Split::Train), two(data, kVocab, 7, Split::Train);
  const auto late = one.document(12345, 1 << 20);  // asked first, out of order
  for (int64_t i : {0, 1, 4095, 4096, 9999}) EXPECT_EQ(one.document(i, 1 << 20), two.document(i, 1 << 20)) << i;
  EXPECT_EQ(two.document(12345, 1 << 20), late);
  const MixtureSource other(data, kVocab, 8, Split::Train);
  int same = 0;
  for (int64_t i = 0; i < 100; ++i) same += one.document(i, 1 << 20) == other.document(i, 1 << 20);
  EXPECT_LT(same, 20);
}

TEST_F(Mixture, HeldOutDocumentsNeverTrain) {
  data.upsample_long = {300, 0.5};
  const auto train = draw(MixtureSource(data, kVocab, 7, Split::Train), 0, 20000).ids;
  const auto eval = draw(MixtureSource(data, kVocab, 7, Split::Eval), 0, 2000).ids;
  EXPECT_EQ(eval.size(), 20u + 15u);  // 5% of each dataset
  for (int64_t id : eval) EXPECT_EQ(train.count(id), 0u) << id;
  EXPECT_EQ(train.size(), 380u + 285u);  // every training document comes up
}

// `longtrain data`: the counts of the files as written, and each source's
// share of the tokens and of long documents within it, natural and as the
// mixture above draws them (80% where upsampled to 0.8: the sample's figure).
TEST_F(Mixture, DescribedAsWrittenAndAsDrawn) {
  const std::string dir = testing::scratch_dir("mixture_test", "stats");
  const std::vector<int64_t> lengths = {1, 3, 0, 100, 8192, 40000, 9000};
  std::vector<std::vector<std::vector<int64_t>>> docs;
  for (int64_t n : lengths) docs.push_back({std::vector<int64_t>(n, 7)});
  testing::write_megatron_dataset(dir + "/lengths", docs, 8);
  const auto s = dataset_stats(IndexedDataset(dir + "/lengths"), "lengths", 9000);
  EXPECT_EQ(s.documents, 6);
  EXPECT_EQ(s.empty, 1);
  EXPECT_EQ(s.tokens, 1 + 3 + 100 + 8192 + 40000 + 9000);
  EXPECT_EQ(s.longest, 40000);
  // Buckets [2^b, 2^(b+1)): 1 -> 0, 3 -> 1, 100 -> 6, 8192 and 9000 -> 13, 40000 -> 15.
  const std::vector<int64_t> counts = {1, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 2, 0, 1};
  EXPECT_EQ(s.bucket_documents, counts);
  EXPECT_EQ(s.bucket_tokens[13], 8192 + 9000);
  EXPECT_EQ(s.long_tokens, (std::vector<int64_t>{8192 + 40000 + 9000, 40000, 0}));
  EXPECT_EQ(s.min_length_documents, 2);
  EXPECT_EQ(s.min_length_tokens, 49000);
  EXPECT_NE(describe(s).find("lengths: 6 documents, 57296 tokens (mean 9549, longest 40000), 1 empty"),
            std::string::npos)
      << describe(s);

  data.upsample_long = {300, 0.8};
  std::vector<DatasetStats> sources;
  for (const auto& m : data.mixture) sources.push_back(dataset_stats(IndexedDataset(m.path), m.path, 300));
  // Dataset a: one in ten documents of 400-600 tokens, as written.
  const double natural = static_cast<double>(sources[0].min_length_tokens) / static_cast<double>(sources[0].tokens);
  const std::string text = describe_mixture(data, sources);
  EXPECT_NE(text.find(" 30.0%  " + data.mixture[0].path + "  " + formatted("%5.1f%%", 100 * natural) + " ->  80.0%"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find(" 70.0%  " + data.mixture[1].path + "    0.0% ->   0.0%"), std::string::npos) << text;
}

// Every prefix of the stream holds each part's share, to within half an
// index per part before it.
TEST(Interleave, EveryPrefixHoldsItsShare) {
  const std::vector<double> weights = {0.5, 0.3, 0.15, 0.05};
  const Interleave interleave(weights);
  std::vector<int64_t> seen(weights.size(), 0);
  for (int64_t i = 0; i < 200000; ++i) {
    const auto [part, index] = interleave(i);
    EXPECT_EQ(index, seen[part]) << "index " << i;  // each part's indices in order, none skipped
    ++seen[part];
    for (size_t p = 0; p < weights.size(); ++p)
      ASSERT_LE(std::abs(static_cast<double>(seen[p]) - weights[p] * (i + 1)), 0.5 * (p + 1))
          << "part " << p << " at " << i;
  }
}

}  // namespace
}  // namespace lt
