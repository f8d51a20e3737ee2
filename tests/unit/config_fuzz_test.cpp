// Config robustness: every shipped recipe, mutated by a fixed-seed fuzzer
// (wrong types, missing and unknown keys, negative, zero and huge numbers,
// wrong nesting, broken YAML), either loads and lays out, or fails with
// one line of lt::Error. Never another exception, a crash or a hang. The
// mutations of the CPU recipes that load then train a step (of one
// sequence, to stay quick) or are refused with one line. The counts are
// printed.
#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <random>

#include "core/config/config.h"
#include "train/trainer.h"
#include "core/util/error.h"
#include "parallel/mesh/layout.h"
#include "tests/support/reference.h"

namespace lt {
namespace {

namespace fs = std::filesystem;

// Paths of every node of a recipe (a.b.c), scalars and sections alike.
void collect(const YAML::Node& node, const std::string& prefix, std::vector<std::string>& out) {
  if (!prefix.empty()) out.push_back(prefix);
  if (!node.IsMap()) return;
  for (const auto& item : node)
    collect(item.second, (prefix.empty() ? "" : prefix + ".") + item.first.as<std::string>(), out);
}

// The node at `path` (created when missing), and its parent's key.
YAML::Node at(YAML::Node root, const std::string& path) {
  YAML::Node node = root;
  size_t start = 0;
  for (;;) {
    const size_t dot = path.find('.', start);
    const std::string key = path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    node.reset(node[key]);
    if (dot == std::string::npos) return node;
    start = dot + 1;
  }
}

void remove_at(YAML::Node root, const std::string& path) {
  const size_t dot = path.rfind('.');
  YAML::Node parent = dot == std::string::npos ? root : at(root, path.substr(0, dot));
  parent.remove(path.substr(dot == std::string::npos ? 0 : dot + 1));
}

// One mutation of `recipe`, as YAML text.
std::string mutate(const std::string& recipe, std::mt19937_64& random) {
  YAML::Node root = YAML::Load(recipe);
  std::vector<std::string> paths;
  collect(root, "", paths);
  const std::string path = paths[random() % paths.size()];
  const std::vector<std::string> values = {"abc",  "-1",     "0",      "1e30", "99999999999999999999",
                                           "-0.5", "[1, 2]", "{x: 1}", "~",    "true",
                                           "''",   "0x10",   "1K",     "nan"};
  switch (random() % 5) {
    case 0:
      at(root, path) = YAML::Load(values[random() % values.size()]);
      break;
    case 1:
      remove_at(root, path);
      break;
    case 2:
      at(root, path) = YAML::Load("{colour: 3}");
      break;   // a wrong section, or a scalar turned section
    case 3: {  // an unknown key beside it
      const size_t dot = path.rfind('.');
      at(root, dot == std::string::npos ? "unknown_key" : path.substr(0, dot) + ".unknown_key") = 1;
      break;
    }
    default: {  // broken YAML text
      std::string text = YAML::Dump(root);
      const size_t where = random() % text.size();
      const std::vector<std::string> breaks = {":", "\t", "{", "- ", "\n  x", "'", "&a *b"};
      return text.insert(where, breaks[random() % breaks.size()]);
    }
  }
  return YAML::Dump(root);
}

// A recipe that loaded, trained for one step of one sequence (the CPU ones):
// 1 when it ran, 0 when refused with one line; anything else fails.
int train_one_step(Config config, const fs::path& run_dir) {
  config.train.steps = 1, config.train.warmup_steps = 0, config.eval.at_end = false;
  config.train.global_batch_tokens = config.data.seq_len, config.train.micro_batch_size = 1;
  config.data.curriculum.clear();
  config.checkpoint.resume = "none";
  config.run_dir = run_dir.string();
  try {
    Trainer(config).run();
    return 1;
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos) << e.what();
    return 0;
  }
}

TEST(ConfigFuzz, EveryMutationLoadsOrFailsWithOneLine) {
  testing::ensure_mpi();
  const auto dir = fs::temp_directory_path() / ("lt_config_fuzz_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  std::mt19937_64 random(20261124);
  int cases = 0, loaded = 0, refused = 0, ran = 0;
  std::vector<fs::path> recipes;  // in name order: the same cases on every machine
  for (const auto& entry : fs::directory_iterator("recipes")) recipes.push_back(entry.path());
  std::sort(recipes.begin(), recipes.end());
  for (const auto& recipe_path : recipes) {
    std::ifstream in(recipe_path);
    const std::string recipe((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    for (int i = 0; i < 60; ++i, ++cases) {
      const std::string text = mutate(recipe, random);
      const std::string path = (dir / recipe_path.filename()).string();
      std::ofstream(path) << text;
      try {
        const Config config = load_config(path, {"init.from_hf=''"});
        for (int world : {1, 8}) {
          try {
            resolve_degrees(config, world);
          } catch (const Error&) {  // a layout for other worlds: the mesh says so at start
          }
        }
        ++loaded;
        if (recipe_path.filename().string().rfind("tiny", 0) == 0) ran += train_one_step(config, dir / "run");
      } catch (const Error& e) {
        const std::string message = e.what();
        EXPECT_FALSE(message.empty());
        EXPECT_EQ(message.find('\n'), std::string::npos) << "not one line:\n" << message << "\nfor:\n" << text;
        ++refused;
      } catch (const std::exception& e) {
        ADD_FAILURE() << "not an lt::Error (" << e.what() << ") for " << recipe_path << ":\n" << text;
      }
    }
  }
  fs::remove_all(dir);
  std::printf(
      "config fuzz: %d mutated recipes (seed 20261124): %d load (%d of the CPU ones train a step), "
      "%d refused with one line\n",
      cases, loaded, ran, refused);
  EXPECT_GE(cases, 500);
  EXPECT_GT(refused, cases / 2);
}

}  // namespace
}  // namespace lt
