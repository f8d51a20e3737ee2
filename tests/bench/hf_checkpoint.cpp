// Context extension's two costs:
//  load: reading an HF checkpoint (a 246M-parameter Llama in BF16 shards of
//    100 MB) into one rank's model: the whole model, one tensor-parallel
//    rank's quarter, one pipeline stage's quarter; against reading the whole
//    files into memory (what a loader without slicing does). The files are
//    evicted from the page cache before each run (posix_fadvise), so the
//    times include the disk;
//  curriculum: tokens/s of the tiny Llama at each stage of a length
//    curriculum, 8K tokens per step: 256, 1024 and 4096 tokens.
//
// usage: lt_bench_hf load DIR REPEATS | lt_bench_hf curriculum STEPS

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "core/checkpoint/safetensors.h"
#include "core/hf/hf_weights.h"
#include "train/trainer.h"
#include "core/util/error.h"
#include "tests/bench/bench_support.h"

namespace fs = std::filesystem;

namespace lt {
namespace {

ModelConfig llama_246m() {
  ModelConfig m;
  m.vocab_size = 32000;
  m.hidden_size = 1024;
  m.intermediate_size = 2816;
  m.num_layers = 16;
  m.num_heads = 16;
  m.num_kv_heads = 4;
  return m;
}

void evict(const std::string& dir) {
  for (const auto& entry : fs::directory_iterator(dir)) {
    const int fd = ::open(entry.path().c_str(), O_RDONLY);
    if (fd < 0) continue;
    ::fdatasync(fd);
    ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    ::close(fd);
  }
}

double cold(const std::string& dir, int repeats, const std::function<void()>& load) {
  double best = 1e30;
  for (int i = 0; i < repeats; ++i) {
    evict(dir);
    best = std::min(best, bench::best_of(1, load, 0));
  }
  return best;
}

void load(const std::string& dir, int repeats) {
  const ModelConfig m = llama_246m();
  if (!fs::exists(dir + "/config.json")) {
    LlamaForCausalLM model(m);
    model->initialize(1);
    export_hf(m, *model, dir, {"bfloat16", 0.1});
  }
  int64_t bytes = 0;
  for (const auto& entry : fs::directory_iterator(dir)) bytes += static_cast<int64_t>(entry.file_size());
  nlohmann::ordered_json out = {
      {"bench", "load"}, {"parameters", 0}, {"bytes", bytes}, {"threads", at::get_num_threads()}};
  out["whole_files_s"] = cold(dir, repeats, [&] {
    for (const auto& entry : fs::directory_iterator(dir))
      if (entry.path().extension() == ".safetensors") load_safetensors(entry.path().string());
  });
  auto rank = [&](ModelShard shard) {
    LlamaForCausalLM model(m, shard);
    int64_t parameters = 0;
    for (const auto& p : model->parameters()) parameters += p.numel();
    const double seconds = cold(dir, repeats, [&] { load_hf_weights(dir, *model); });
    return nlohmann::ordered_json{{"parameters", parameters}, {"seconds", seconds}};
  };
  out["whole_model"] = rank({});
  out["parameters"] = out["whole_model"]["parameters"];
  ModelShard tp;
  tp.tp_rank = 1, tp.tp_size = 4;
  out["tp4_rank"] = rank(tp);
  ModelShard stage;
  stage.first_layer = 4, stage.num_layers = 4, stage.first_stage = false, stage.last_stage = false;
  out["pp4_middle_stage"] = rank(stage);
  std::printf("%s\n", out.dump().c_str());
}

void curriculum(int64_t steps) {
  const std::string dir = (fs::temp_directory_path() / "lt_bench_hf_curriculum").string();
  fs::remove_all(dir);
  Config c;
  c.run_dir = dir;
  c.model.vocab_size = 256, c.model.hidden_size = 128, c.model.intermediate_size = 384;
  c.model.num_layers = 4, c.model.num_heads = 4, c.model.num_kv_heads = 2, c.model.init_std = 0.08;
  c.data.seq_len = 4096;
  c.data.passkey.min_doc_len = 36, c.data.passkey.max_doc_len = 4096;
  c.data.curriculum = {{steps, 256}, {2 * steps, 1024}};
  c.train.steps = 3 * steps;
  c.train.global_batch_tokens = 8192;
  c.train.micro_batch_size = 2;
  c.train.warmup_steps = 1;
  c.log.interval = 1;
  c.eval.at_end = false;
  Trainer trainer(c);
  trainer.run();
  // Each stage's steps after its first (which warms up), from the metrics.
  std::ifstream metrics(dir + "/metrics.jsonl");
  std::map<int64_t, std::vector<double>> rates;
  for (std::string line; std::getline(metrics, line);) {
    const auto record = nlohmann::json::parse(line);
    if (!record.contains("tokens_per_s")) continue;
    const int64_t step = record.at("step");
    if ((step - 1) % steps == 0) continue;
    rates[c.data.seq_len_at(step - 1)].push_back(record.at("tokens_per_s"));
  }
  for (const auto& [length, values] : rates) {
    double sum = 0;
    for (double v : values) sum += v;
    std::printf("%s\n", nlohmann::ordered_json{{"bench", "curriculum"},
                                               {"seq", length},
                                               {"steps", values.size()},
                                               {"tokens_per_step", c.train.global_batch_tokens},
                                               {"tokens_per_s", sum / static_cast<double>(values.size())}}
                            .dump()
                            .c_str());
  }
}

}  // namespace
}  // namespace lt

int main(int argc, char** argv) {
  return lt::bench::main(argc, argv, "lt_bench_hf", [&] {
    const std::string mode = argc > 1 ? argv[1] : "";
    if (mode == "load" && argc == 4) return lt::load(argv[2], std::atoi(argv[3]));
    if (mode == "curriculum" && argc == 3) return lt::curriculum(std::atoll(argv[2]));
    lt::fail("usage: lt_bench_hf load DIR REPEATS | lt_bench_hf curriculum STEPS");
  });
}
