// The Megatron reader on files written exactly as Megatron writes them, the
// passkey corpus, and packing (labels, documents, positions, resumability).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/data/indexed_dataset.h"
#include "core/data/packer.h"
#include "core/data/passkey_corpus.h"
#include "core/util/error.h"
#include "tests/support/megatron_writer.h"
#include "tests/support/reference.h"

namespace lt {
namespace {

using testing::expect_error;

namespace fs = std::filesystem;

std::string temp_prefix(const std::string& name) {
  auto dir = fs::temp_directory_path() / ("lt_data_test_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  return (dir / name).string();
}

const std::vector<std::vector<std::vector<int64_t>>> kDocs = {
    {{1, 2, 3}, {4, 5}}, {{60000, 7}}, {{8}, {9, 10, 11}, {12}}};

class IndexedDatasetDtypes : public ::testing::TestWithParam<int> {};

TEST_P(IndexedDatasetDtypes, ReadsWhatMegatronWrites) {
  const uint8_t code = static_cast<uint8_t>(GetParam());
  auto docs = kDocs;
  if (code == 1 || code == 2 || code == 3) docs[1][0][0] = 100;  // fits the narrow types
  const auto prefix = temp_prefix("dtype" + std::to_string(code));
  testing::write_megatron_dataset(prefix, docs, code);
  IndexedDataset dataset(prefix);
  EXPECT_EQ(dataset.num_sequences(), 6);
  EXPECT_EQ(dataset.num_documents(), 3);
  EXPECT_EQ(dataset.sequence(1), (std::vector<int64_t>{4, 5}));
  EXPECT_EQ(dataset.document(0), (std::vector<int64_t>{1, 2, 3, 4, 5}));
  EXPECT_EQ(dataset.document(1)[0], docs[1][0][0]);
  EXPECT_EQ(dataset.document(2), (std::vector<int64_t>{8, 9, 10, 11, 12}));
}
INSTANTIATE_TEST_SUITE_P(AllIntegerCodes, IndexedDatasetDtypes, ::testing::Values(1, 2, 3, 4, 5, 8));

// Files written by megatron-core's own builder (tests/oracle/megatron_write.py);
// ctest's IndexedDataset.MegatronCoreOracle makes them and names the folder.
TEST(IndexedDataset, ReadsWhatMegatronCoreWrites) {
  const char* dir = std::getenv("LT_MEGATRON_ORACLE_DIR");
  if (!dir) GTEST_SKIP() << "run through ctest's IndexedDataset.MegatronCoreOracle";
  auto documents = nlohmann::json::parse(std::ifstream(std::string(dir) + "/documents.json"));
  for (const char* name : {"uint16", "int32"}) {
    IndexedDataset dataset(std::string(dir) + "/" + name);
    ASSERT_EQ(dataset.num_documents(), static_cast<int64_t>(documents.size())) << name;
    for (size_t i = 0; i < documents.size(); ++i)
      EXPECT_EQ(dataset.document(i), documents[i].get<std::vector<int64_t>>()) << name << " document " << i;
  }
}

TEST(IndexedDataset, RefusesBadFiles) {
  const auto prefix = temp_prefix("bad");
  testing::write_megatron_dataset(prefix, kDocs, 8);
  expect_error([&] { IndexedDataset d(temp_prefix("missing")); }, {"missing.idx: cannot open"});

  fs::resize_file(prefix + ".bin", 10);  // truncated data
  expect_error([&] { IndexedDataset d(prefix); }, {".bin: sequence"});

  testing::write_megatron_dataset(prefix, kDocs, 8);
  fs::resize_file(prefix + ".idx", fs::file_size(prefix + ".idx") - 8);  // truncated index
  expect_error([&] { IndexedDataset d(prefix); }, {"does not match its header"});

  testing::write_megatron_dataset(prefix, kDocs, 8);
  {
    std::fstream f(prefix + ".idx", std::ios::in | std::ios::out | std::ios::binary);
    f.write("XXXX", 4);
  }
  expect_error([&] { IndexedDataset d(prefix); }, {"not a Megatron indexed dataset"});

  testing::write_megatron_dataset(prefix, kDocs, 8);
  {
    std::fstream f(prefix + ".idx", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(17);
    f.put(7);
  }
  expect_error([&] { IndexedDataset d(prefix); }, {"dtype code 7 is not an integer token type"});
}

TEST(IndexedDataset, TokensOutsideTheVocabularyAreRefused) {
  const auto prefix = temp_prefix("vocab");
  testing::write_megatron_dataset(prefix, kDocs, 8);
  DataConfig data;
  data.source = DataSourceKind::indexed;
  data.path = prefix;
  data.eval_fraction = 0;
  auto source = make_document_source(data, 1000, 1, Split::Train);
  expect_error(
      [&] {
        for (int i = 0; i < 3; ++i) source->document(i, 1024);
      },
      {"token id 60000 is outside model.vocab_size=1000"});
}

TEST(Passkey, SamplesHoldTheirKeyAndAreDeterministic) {
  PasskeyConfig config;
  config.digits = 4;
  config.min_doc_len = 64;
  PasskeyCorpus corpus(config, 256, 9);
  auto s = corpus.sample(3, 300);
  ASSERT_EQ(s.tokens.size(), 300u);
  EXPECT_EQ(s.tokens.front(), passkey_tokens::kBos);
  EXPECT_EQ(s.tokens.back(), passkey_tokens::kEos);
  EXPECT_EQ(s.tokens[s.answer_start - 2], passkey_tokens::kQuery);
  EXPECT_EQ(s.tokens[s.answer_start - 1], passkey_tokens::kKey);
  // The answer repeats the digits that follow the <key> marker.
  auto key = std::find(s.tokens.begin(), s.tokens.end(), passkey_tokens::kKey) - s.tokens.begin();
  for (int d = 0; d < 4; ++d) EXPECT_EQ(s.tokens[key + 1 + d], s.tokens[s.answer_start + d]);
  EXPECT_EQ(corpus.sample(3, 300).tokens, s.tokens);
  EXPECT_NE(corpus.sample(4, 300).tokens, s.tokens);
  for (int64_t t : corpus.document(11, 1024)) EXPECT_LT(t, 256);
  EXPECT_LE(corpus.document(12, 200).size(), 200u);  // generated within the current length
}

// Evaluation places the key at a chosen depth of the same filler.
TEST(Passkey, KeyAtAChosenDepth) {
  PasskeyConfig config;
  config.digits = 3;
  PasskeyCorpus corpus(config, 256, 9);
  const int64_t filler = 400 - (2 * 3 + 6);
  auto without_key = [](std::vector<int64_t> tokens) {
    const auto key = std::find(tokens.begin(), tokens.end(), passkey_tokens::kKey);
    tokens.erase(key, key + 5);  // <key> d1 d2 d3 <key>
    return tokens;
  };
  const auto random = corpus.sample(5, 400);
  for (double depth : {0.0, 0.25, 0.5, 1.0}) {
    const auto s = corpus.sample(5, 400, depth);
    const auto key = std::find(s.tokens.begin(), s.tokens.end(), passkey_tokens::kKey) - s.tokens.begin();
    EXPECT_EQ(key, 1 + std::llround(depth * filler)) << depth;  // after <bos> and that much filler
    EXPECT_EQ(without_key(s.tokens), without_key(random.tokens)) << depth;
    EXPECT_EQ(s.tokens.size(), 400u);
  }
}

// A fixed document stream: document i is i+1 tokens long, token values 100*i + j.
class CountingSource : public DocumentSource {
 public:
  std::vector<int64_t> document(int64_t i, int64_t) const override {
    std::vector<int64_t> d(i + 1);
    for (int64_t j = 0; j <= i; ++j) d[j] = 100 * i + j;
    return d;
  }
};

TEST(Packer, SplitPackingShiftsLabelsWithinDocuments) {
  CountingSource source;
  DataConfig config;
  config.seq_len = 8;
  config.packing = Packing::split;
  Packer packer(source, config, {2, 0});  // documents 2 (3 tokens), 3 (4 tokens), 4 (5 tokens)...
  auto b = packer.next(2, config.seq_len);
  // Sequence 0: [200 201 202 | 300 301 302 303 | 400], document 4 continues.
  EXPECT_TRUE(b.tokens[0].equal(at::tensor({200L, 201L, 202L, 300L, 301L, 302L, 303L, 400L})));
  EXPECT_TRUE(b.labels[0].equal(at::tensor({201L, 202L, kIgnoreIndex, 301L, 302L, 303L, kIgnoreIndex, 401L})));
  EXPECT_TRUE(b.positions[0].equal(at::tensor({0L, 1L, 2L, 0L, 1L, 2L, 3L, 0L})));
  EXPECT_TRUE(b.documents[0].equal(at::tensor({0L, 0L, 0L, 1L, 1L, 1L, 1L, 2L})));
  // Sequence 1 continues document 4 at offset 1.
  EXPECT_TRUE(b.tokens[1].narrow(0, 0, 4).equal(at::tensor({401L, 402L, 403L, 404L})));
  EXPECT_EQ(b.labels[1][3].item<int64_t>(), kIgnoreIndex);
}

// data.packing: adaptive: whole documents, one row each, cut at the longest
// length and at the step's last token, continuing in the next row.
TEST(Packer, DocumentsOneRowEachCutAtTheLimits) {
  CountingSource source;
  DataConfig config;
  config.packing = Packing::adaptive;
  Packer packer(source, config, {2, 0});  // documents of 3, 4, 5, 6... tokens
  const auto step = packer.documents(14, 5);
  ASSERT_EQ(step.size(), 4u);  // 3, 4, 5, then 2 of document 5's 6 tokens
  EXPECT_TRUE(step[0].tokens[0].equal(at::tensor({200L, 201L, 202L})));
  EXPECT_TRUE(step[0].labels[0].equal(at::tensor({201L, 202L, kIgnoreIndex})));
  EXPECT_TRUE(step[2].positions[0].equal(at::tensor({0L, 1L, 2L, 3L, 4L})));
  EXPECT_TRUE(step[3].tokens[0].equal(at::tensor({500L, 501L})));
  EXPECT_TRUE(step[3].labels[0].equal(at::tensor({501L, 502L})));  // it continues
  EXPECT_FALSE(step[0].documents.defined());
  const auto next = packer.documents(6, 5);  // the rest of document 5 (4 tokens), then 2 of document 6
  EXPECT_TRUE(next[0].tokens[0].equal(at::tensor({502L, 503L, 504L, 505L})));
  EXPECT_EQ(next[0].labels[0][3].item<int64_t>(), kIgnoreIndex);
  // A document longer than the limit: rows of 5, 5, then the rest.
  Packer longer(source, config, {10, 0});
  const auto cut = longer.documents(11, 5);
  ASSERT_EQ(cut.size(), 3u);
  EXPECT_EQ(cut[0].tokens.size(1), 5);
  EXPECT_EQ(cut[2].tokens.size(1), 1);
  EXPECT_EQ(longer.position().document, 11);
}

TEST(Packer, WholePackingPadsInsteadOfSplitting) {
  CountingSource source;
  DataConfig config;
  config.seq_len = 8;
  config.packing = Packing::whole;
  Packer packer(source, config, {2, 0});
  auto b = packer.next(2, config.seq_len);
  // [200 201 202 | 300 301 302 303 | pad]: document 4 (5 tokens) does not fit.
  EXPECT_TRUE(b.tokens[0].narrow(0, 0, 7).equal(at::tensor({200L, 201L, 202L, 300L, 301L, 302L, 303L})));
  EXPECT_EQ(b.labels[0][7].item<int64_t>(), kIgnoreIndex);
  EXPECT_TRUE(b.tokens[1].narrow(0, 0, 5).equal(at::tensor({400L, 401L, 402L, 403L, 404L})));
  EXPECT_EQ(b.valid_tokens(), 9);  // 2 + 3 labels in the first sequence, 4 in the second
}

TEST(Packer, ResumesFromItsPosition) {
  CountingSource source;
  DataConfig config;
  config.seq_len = 16;
  Packer straight(source, config);
  straight.next(3, config.seq_len);
  auto expected = straight.next(2, config.seq_len);
  Packer first(source, config);
  first.next(3, config.seq_len);
  Packer resumed(source, config, first.position());
  auto got = resumed.next(2, config.seq_len);
  EXPECT_TRUE(got.tokens.equal(expected.tokens));
  EXPECT_TRUE(got.labels.equal(expected.labels));
  EXPECT_TRUE(got.positions.equal(expected.positions));
}

TEST(Packer, WithoutDocumentMaskOrPositionReset) {
  CountingSource source;
  DataConfig config;
  config.seq_len = 6;
  config.document_mask = false;
  config.reset_position_ids = false;
  auto b = Packer(source, config, {1, 0}).next(1, config.seq_len);
  EXPECT_FALSE(b.documents.defined());
  EXPECT_TRUE(b.positions[0].equal(at::arange(6, at::kLong)));
}

}  // namespace
}  // namespace lt
