// Checkpoints: safetensors round trip, bit-exact resume (N + N steps equal 2N
// uninterrupted), refusal of corrupted or truncated checkpoints, and that a
// half-written checkpoint is never taken as the latest; the overlap of two
// layouts' parts of a tensor.
#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "train/checkpoint.h"
#include "core/checkpoint/safetensors.h"
#include "core/checkpoint/slice_runs.h"
#include "train/trainer.h"
#include "core/util/checksum.h"
#include "core/util/error.h"
#include "tests/support/reference.h"

namespace lt {
namespace {

namespace fs = std::filesystem;

std::string temp_dir(const std::string& name) { return testing::scratch_dir("ckpt_test", name); }

// A part's elements, cut from the full tensor directly.
at::Tensor held(const at::Tensor& full, const SlicePart& p) {
  return full.narrow(p.dim, p.offset, p.length).reshape(-1).narrow(0, p.start, p.end - p.start);
}

// Every part a file may hold under any cut along `dim` into `pieces`, each
// in `segments` ZeRO segments.
std::vector<SlicePart> layout_parts(const std::vector<int64_t>& shape, int64_t dim, int64_t pieces, int64_t segments) {
  std::vector<SlicePart> out;
  const int64_t length = shape[dim] / pieces, elements = c10::multiply_integers(shape) / pieces;
  for (int64_t p = 0; p < pieces; ++p)
    for (int64_t s = 0; s < segments; ++s)
      out.push_back({shape, dim, p * length, length, elements * s / segments, elements * (s + 1) / segments});
  return out;
}

// Reading a part from the parts another layout wrote, through their runs'
// overlaps, gives exactly its elements, every one filled once.
TEST(SliceRuns, OverlapsOfAnyTwoLayoutsRebuildEveryPart) {
  const std::vector<int64_t> shape{6, 4, 10};
  const auto full = at::arange(c10::multiply_integers(shape), at::kFloat).view(shape);
  for (int64_t write_dim = 0; write_dim < 3; ++write_dim)
    for (int64_t read_dim = 0; read_dim < 3; ++read_dim)
      for (auto [written_pieces, written_segments, read_pieces, read_segments] :
           {std::array<int64_t, 4>{2, 1, 1, 1}, {2, 3, 1, 2}, {1, 1, 2, 3}, {2, 2, 2, 1}, {1, 4, 2, 3}}) {
        const auto written = layout_parts(shape, write_dim, written_pieces, written_segments);
        for (const auto& want : layout_parts(shape, read_dim, read_pieces, read_segments)) {
          auto out = at::full({want.end - want.start}, -1.0f), count = at::zeros({want.end - want.start});
          for (const auto& part : written) {
            const auto stored = held(full, part);
            for (const auto& o : overlaps(runs(want), runs(part))) {
              out.narrow(0, o.a, o.length).copy_(stored.narrow(0, o.b, o.length));
              count.narrow(0, o.a, o.length).add_(1);
            }
          }
          SCOPED_TRACE(c10::str("written along ", write_dim, " in ", written_pieces, "x", written_segments,
                                ", read along ", read_dim, " at ", want.offset, " [", want.start, ", ", want.end, ")"));
          EXPECT_TRUE(out.equal(held(full, want)));
          EXPECT_TRUE(count.eq(1).all().item<bool>());
        }
      }
}

// Checkpoints every 3 steps, with accumulation and a decaying LR.
Config small_run(const std::string& dir, int64_t steps) {
  Config c = testing::tiny_run(dir, steps);
  c.train.micro_batch_size = 2;
  c.train.warmup_steps = 2;
  c.train.min_lr = 1e-3;
  c.checkpoint.interval = 3;
  return c;
}

TEST(Checksum, StreamingEqualsWhole) {
  std::vector<uint8_t> bytes(1001);
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<uint8_t>(i * 37 + 11);
  Checksum whole, pieces;
  whole.update(bytes.data(), bytes.size());
  for (size_t start = 0, step = 1; start < bytes.size(); start += step, step = step % 13 + 2)
    pieces.update(bytes.data() + start, std::min(step, bytes.size() - start));
  EXPECT_EQ(pieces.hex(), whole.hex());
  Checksum changed;
  bytes[500] ^= 1;
  changed.update(bytes.data(), bytes.size());
  EXPECT_NE(changed.hex(), whole.hex());
}

// Files are checked in 4 MiB blocks: both algorithms equal the whole buffer's.
TEST(Checksum, FileInBlocksEqualsTheWholeBuffer) {
  std::vector<uint8_t> bytes((size_t{9} << 20) + 13);
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<uint8_t>(i * 131 + (i >> 12));
  const auto path = temp_dir("blocks") + "/f.bin";
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()), bytes.size());
  Checksum whole;
  whole.update(bytes.data(), bytes.size());
  EXPECT_EQ(file_checksum(path), whole.hex());
  // Format 3's FNV-1a over 8-byte words, the tail bytes, xor the length.
  uint64_t fnv = 0xcbf29ce484222325ULL;
  size_t i = 0;
  for (uint64_t word; i + 8 <= bytes.size(); i += 8)
    std::memcpy(&word, &bytes[i], 8), fnv = (fnv ^ word) * 0x100000001b3ULL;
  for (; i < bytes.size(); ++i) fnv = (fnv ^ bytes[i]) * 0x100000001b3ULL;
  char hex[17];
  std::snprintf(hex, sizeof(hex), "%016llx", static_cast<unsigned long long>(fnv ^ bytes.size()));
  EXPECT_EQ(file_checksum(path, kLegacyChecksumAlgorithm), hex);
}

TEST(Safetensors, RoundTripsDtypesAndShapes) {
  const auto path = temp_dir("st") + "/t.safetensors";
  NamedTensors tensors = {{"a", at::randn({3, 4})},
                          {"b", at::randn({5}).to(at::kBFloat16)},
                          {"c", at::arange(6, at::kLong).view({2, 3})},
                          {"scalar", at::tensor(1.5f)}};
  const auto written = save_safetensors(path, tensors, {{"format", "pt"}});
  EXPECT_EQ(written.bytes, fs::file_size(path));
  EXPECT_EQ(written.checksum, file_checksum(path));
  auto loaded = load_safetensors(path);
  ASSERT_EQ(loaded.size(), tensors.size());
  for (const auto& [name, t] : tensors) EXPECT_TRUE(loaded.at(name).equal(t)) << name;
}

TEST(Checkpoint, ResumeIsBitExact) {
  const auto dir = temp_dir("resume");
  auto straight = Trainer(small_run(dir + "/straight", 8)).run().losses;

  // The same job, "interrupted" after its step-6 checkpoint: drop the later
  // one and resume. The schedule is the 8-step one throughout.
  Config first = small_run(dir + "/split", 8);
  Trainer(first).run();
  fs::remove_all(dir + "/split/checkpoints/step_00000008");
  Config second = first;
  second.checkpoint.resume = "auto";
  auto resumed = Trainer(second).run().losses;

  ASSERT_EQ(resumed.size(), 2u);
  EXPECT_EQ(resumed.begin()->first, 7);
  for (const auto& [step, loss] : resumed) EXPECT_EQ(loss, straight.at(step)) << "step " << step;  // exact, not near
}

// Loads weights and optimizer state (each file is verified as it is read).
void expect_refused(const std::string& checkpoint, const std::string& fragment) {
  LlamaForCausalLM model(testing::tiny_model());
  std::vector<NamedParameter> params;
  for (auto& item : model->named_parameters()) params.push_back({item.key(), item.value()});
  AdamW optimizer(params, {});
  try {
    load_checkpoint(checkpoint, *model, &optimizer, nullptr);
    ADD_FAILURE() << "loaded a damaged checkpoint";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
  }
}

TEST(Checkpoint, CorruptionIsDetected) {
  const auto dir = temp_dir("corrupt");
  Config c = small_run(dir, 3);
  Trainer(c).run();
  const auto step = dir + "/checkpoints/step_00000003";
  const auto backup = dir + "/backup";
  fs::copy(step, backup);

  {  // flip one byte in the middle of the weights
    std::fstream f(step + "/model.safetensors", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(fs::file_size(step + "/model.safetensors") / 2));
    f.put('\x7f');
  }
  expect_refused(step, "checksum");

  fs::remove_all(step);
  fs::copy(backup, step);
  fs::resize_file(step + "/optimizer.safetensors", 100);
  expect_refused(step, "optimizer.safetensors: 100 bytes, the manifest says");

  fs::remove_all(step);
  fs::copy(backup, step);
  std::ofstream(step + "/manifest.json") << "{\"format\": \"longtrain-checkpoint\", \"vers";
  expect_refused(step, "manifest.json: malformed JSON");
}

TEST(Checkpoint, PartialWriteIsNeverLatest) {
  const auto dir = temp_dir("partial");
  Config c = small_run(dir, 3);
  Trainer(c).run();
  CheckpointStore store(dir + "/checkpoints", 2);
  // A crash mid-save leaves step_N.tmp; a step directory without its manifest is incomplete too.
  fs::create_directories(dir + "/checkpoints/step_00000009.tmp");
  fs::create_directories(dir + "/checkpoints/step_00000007");
  EXPECT_EQ(store.latest(), dir + "/checkpoints/step_00000003");
  Communicator self(MPI_COMM_SELF, "self", 60);
  store.open("auto", false, self);
  EXPECT_FALSE(fs::exists(dir + "/checkpoints/step_00000009.tmp"));
}

TEST(Checkpoint, KeepsOnlyTheNewest) {
  const auto dir = temp_dir("keep");
  Config c = small_run(dir, 9);
  c.checkpoint.keep = 2;
  Trainer(c).run();
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir + "/checkpoints")) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"step_00000006", "step_00000009"}));
}

}  // namespace
}  // namespace lt
