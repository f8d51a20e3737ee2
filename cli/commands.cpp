#include "cli/commands.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdlib>
#include <iostream>
#include <filesystem>
#include <map>
#include <optional>

#include <yaml-cpp/yaml.h>

#include "cli/job_agreement.h"
#include "cli/launch_check.h"
#include "train/checkpoint.h"
#include "core/config/config.h"
#include "core/data/dataset_stats.h"
#include "core/hf/hf_weights.h"
#include "core/model/model_size.h"
#include "train/equivalence_check.h"
#include "train/evaluate.h"
#include "train/model_state.h"
#include "train/trainer.h"
#include "core/util/error.h"
#include "core/util/files.h"
#include "core/util/fault_injection.h"
#include "core/util/bf16_support.h"
#include "core/util/resources.h"
#include "parallel/mesh/mesh.h"
#include "train/layout_scorer.h"
#include "train/plan.h"
#include "train/rank_model.h"

namespace lt {
namespace {

const char* kProgramHelp = R"(longtrain: train LLMs on very long sequences

usage: longtrain <command> [arguments]

commands:
  train RECIPE [key.path=value ...]                 train from a YAML recipe (under mpirun: in parallel)
  eval RECIPE --checkpoint DIR [key.path=value ...] held-out loss, perplexity, passkey accuracy
  export RUN_DIR --hf OUT                           the run's newest checkpoint as a Hugging Face model
  plan RECIPE --world N [--ranks-per-node R]        rank grid, parameters and memory per rank
  check RECIPE [--steps N] [--tiny] [key=value ...] the recipe's layout against one rank (run before a long job)
  data PREFIX... | RECIPE [key.path=value ...]      documents, tokens and lengths of Megatron datasets
  help [command]                                    this text, or a command's
  help recipe                                       every recipe key with its default (docs/recipe_keys.md)

Run with mpirun for several processes; every option of a recipe can be
overridden on the command line, e.g. train.lr=3e-4 data.seq_len=8K.
)";

const char* kTrainHelp = R"(usage: longtrain train RECIPE [key.path=value ...]

Trains the model a recipe describes. The run directory (run_dir) receives the
resolved config (config.yaml), train.log, metrics.jsonl and, unless
checkpoint.dir says otherwise, checkpoints/step_N. With checkpoint.resume=auto
a run continues from its newest complete checkpoint, bit-exactly.

Under mpirun every process is one rank of the grid the recipe's parallel
section describes (parallel.dp=auto fills the world); the global batch, and
so the result, is the same for any dp degree. If one rank fails, the whole
job ends with its message.

examples:
  longtrain train recipes/tiny-passkey.yaml
  longtrain train recipes/tiny-passkey.yaml train.steps=50 run_dir=runs/short
  mpirun -np 4 longtrain train recipes/tiny-passkey.yaml parallel.zero=1
)";

const char* kPlanHelp = R"(usage: longtrain plan RECIPE --world N [--ranks-per-node R] [key.path=value ...]

Lays out the recipe's parallel degrees on N ranks without running anything:
prints which rank holds which tp/ulysses/ring/dp/pp coordinate and on which
node (R ranks per node, default 8), the pipeline stages, and per rank the
parameters and an estimate of memory (weights, gradients, optimizer state,
activations at data.seq_len). Errors in the layout are reported as train
would report them.
)";

const char* kEvalHelp = R"(usage: longtrain eval RECIPE [--checkpoint DIR] [--output FILE] [key.path=value ...]

Loads the weights of a checkpoint (a step_N directory, or a directory of them:
the newest is used) into the recipe's model and reports the loss and
perplexity over eval.sequences held-out sequences, and the loss by position
(eval.position_buckets); for the passkey corpus also retrieval accuracy at
eval.passkey_lengths (default data.seq_len), by depth of the key with
eval.passkey_depths > 1. Without --checkpoint, a recipe with init.from_hf
evaluates that Hugging Face model's weights. It computes in train.precision
(bf16 where the device runs it fast), as training does. Under mpirun the
ranks evaluate on the recipe's parallel layout (with parallel.* overrides),
each holding only its part of the model; rank 0 prints. The figures, at
full precision and with the loss by position, are appended as one JSON line
to FILE (default: run_dir/eval.jsonl, beside training's evaluations).
)";

const char* kCheckHelp = R"(usage: longtrain check RECIPE [--steps N] [--tiny] [key.path=value ...]

Run it under mpirun with the job's own ranks before a long job. It trains
the recipe's parallel layout and memory settings for a few probe steps
(--steps, default 3) and, on every rank, the same batches from the same
initial weights alone, the plainest way (no split, recomputation, tiling or
offload; ZeRO 0). Per step it prints the loss difference and the worst
parameter's gradient (before clipping and the update): cosine similarity
and relative error. The last line is the verdict; the exit code is 1 beyond
the tolerance (fp32: loss and every gradient within 1e-5 relative; bf16:
loss within 5e-3, every gradient at cosine >= 0.999).

The weights are random from train.seed (init.from_hf is not loaded). When
one rank cannot hold the model and its optimizer, both runs use the same
architecture with fewer layers, and the output says so.

--tiny  the recipe scaled down: tiny dimensions, 128-token passkey data, fp32
        on CPU; each kind of split it uses at degree 2 while the ranks allow.
)";

const char* kDataHelp = R"(usage: longtrain data PREFIX [PREFIX ...]
       longtrain data RECIPE.yaml [key.path=value ...]

Describes Megatron indexed datasets (PREFIX.bin/.idx, as scripts/preprocess.py
writes them): documents and tokens, their lengths in power-of-two buckets
(documents and share of the tokens), and the share of the tokens in
documents of at least 8K, 32K and 128K tokens. Given a recipe, its sources
(data.path or data.mixture) and each one's share of the training tokens;
with data.upsample_long also the share of its tokens in documents of at
least min_length, as in the files and as training draws them.
)";

const char* kExportHelp = R"(usage: longtrain export RUN_DIR --hf OUT [--checkpoint DIR] [--dtype D] [--shard-gb G]

Writes the newest checkpoint of a run (or --checkpoint DIR) as a Hugging Face
model directory OUT: config.json (with the run's RoPE settings) and
safetensors weights under HF's names, in shards of at most G GB (default 5)
with model.safetensors.index.json, as D (bfloat16, the default; float16;
float32). transformers' AutoModelForCausalLM.from_pretrained(OUT) loads it.
OUT must not exist; it appears complete or not at all.
)";

bool wants_help(const Args& args) {
  for (const auto& a : args)
    if (a == "--help" || a == "-h") return true;
  return false;
}

// Splits "RECIPE [--flag value] [key=value ...]"; `flags` are those the
// command takes.
struct Parsed {
  std::string recipe;
  std::map<std::string, std::string> flags;
  std::vector<std::string> overrides;
};

Parsed parse(const Args& args, const char* command, const std::vector<std::string>& flags) {
  Parsed p;
  for (size_t i = 0; i < args.size(); ++i) {
    const auto& a = args[i];
    require_utf8(a, std::string(command) + ": argument");
    if (std::find(flags.begin(), flags.end(), a) != flags.end()) {
      if (i + 1 >= args.size()) fail(std::string(command) + ": " + a + " needs a value");
      p.flags[a] = args[++i];
      require_utf8(p.flags[a], std::string(command) + ": " + a);
    } else if (a.rfind("--", 0) == 0) {
      fail(std::string(command) + ": unknown option '" + a + "' (see longtrain " + command + " --help)");
    } else if (p.recipe.empty() && a.find('=') == std::string::npos) {
      p.recipe = a;
    } else {
      p.overrides.push_back(a);
    }
  }
  if (p.recipe.empty()) fail(std::string(command) + ": missing RECIPE (see longtrain " + command + " --help)");
  return p;
}

int positive_flag(const Parsed& p, const std::string& flag, int fallback, const char* command) {
  auto it = p.flags.find(flag);
  if (it == p.flags.end()) {
    if (fallback > 0) return fallback;
    fail(std::string(command) + ": missing " + flag + " N");
  }
  const std::string& text = it->second;
  const bool digits = !text.empty() && text.size() < 9 && text.find_first_not_of("0123456789") == std::string::npos;
  if (!digits || std::stoi(text) < 1)
    fail(std::string(command) + ": " + flag + " '" + text + "' must be a positive integer");
  return std::stoi(text);
}

// Runs the set-up every rank does alike. Errors in it are the same on every
// rank, so they are agreed on and printed once; an error on some ranks only
// is an ordinary failure (it ends the job).
// A rank that never gets here is waited for `timeout_s` (the recipe's
// parallel.timeout_s when it loaded).
template <class Setup>
void agree_on_setup(Setup&& setup, const double& timeout_s) {
  std::string error;
  try {
    setup();
  } catch (const Error& e) {
    error = e.what();
  }
  const int failed = error.empty() ? 0 : 1;
  const int everywhere = setup_sum(MPI_COMM_WORLD, failed, "agreeing on the recipe", timeout_s);
  int rank = 0, world = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  if (everywhere == world) throw AgreedError(error, rank == 0);
  if (failed) fail(error);
}

}  // namespace

int print_help(const std::string& command) {
  if (command == "train") std::cout << kTrainHelp;
  else if (command == "eval") std::cout << kEvalHelp;
  else if (command == "plan") std::cout << kPlanHelp;
  else if (command == "export") std::cout << kExportHelp;
  else if (command == "data") std::cout << kDataHelp;
  else if (command == "check") std::cout << kCheckHelp;
  else if (command == "recipe") std::cout << to_yaml(Config{}) << "\n";
  else std::cout << kProgramHelp;
  return 0;
}

int run_train(const Args& args, MpiSession& mpi) {
  if (wants_help(args)) return print_help("train");
  auto parsed = parse(args, "train", {});
  const int world = mpi.world_size();
  Config config;
  Degrees degrees;
  agree_on_setup(
      [&] {
        check_launch(world);
        config = load_config(parsed.recipe, parsed.overrides);
        inject_fault(mpi.world_rank(), 0);  // step 0: set-up
        degrees = resolve_degrees(config, world);
        check_trainable(config);
      },
      config.parallel.timeout_s);
  agree_on_job(config, "");
  Trainer(config, &mpi.create_mesh(Layout(degrees), config.parallel.timeout_s, device_transport(config))).run();
  return 0;
}

int run_plan(const Args& args) {
  if (wants_help(args)) return print_help("plan");
  auto parsed = parse(args, "plan", {"--world", "--ranks-per-node"});
  const int world = positive_flag(parsed, "--world", 0, "plan");
  const int per_node = positive_flag(parsed, "--ranks-per-node", 8, "plan");
  std::cout << describe_plan(load_config(parsed.recipe, parsed.overrides), world, per_node);
  return 0;
}

// Bytes one rank needs to train `config`'s model alone: fp32 weights,
// gradients and two moments, and bf16 copies (activations aside).
double one_rank_bytes(const Config& config) {
  const auto& m = config.model;
  const double layers = static_cast<double>(m.num_layers * layer_parameters(m, 1, m.moe.experts));
  const double tables = static_cast<double>(m.vocab_size * m.hidden_size) * (m.tie_embeddings ? 1 : 2);
  return (layers + tables) * (16 + (config.train.bf16() ? 2 : 0));
}

int run_check(const Args& args, MpiSession& mpi) {
  if (wants_help(args)) return print_help("check");
  Args rest = args;
  const bool tiny = std::erase(rest, std::string("--tiny")) > 0;
  auto parsed = parse(rest, "check", {"--steps"});
  const int steps = positive_flag(parsed, "--steps", 3, "check");
  const int world = mpi.world_size();
  Config config;
  Degrees degrees;
  std::vector<std::string> notes;
  agree_on_setup(
      [&] {
        check_launch(world);
        config = load_config(parsed.recipe, parsed.overrides);
        if (tiny) notes = scale_down(config, world);
        check_replayable(config);
        degrees = resolve_degrees(config, world);
        check_trainable(config);
        config.train.precision = resolve_precision(config.train.precision, config.train.device);
      },
      config.parallel.timeout_s);
  agree_on_job(config, "");
  Mesh& mesh = mpi.create_mesh(Layout(degrees), config.parallel.timeout_s, device_transport(config));
  // The job and the one-rank run live side by side: the one rank gets half
  // of its device (of a CPU, its share of the machine).
  const bool gpu = config.train.device == DeviceKind::cuda;
  const auto capacity = static_cast<double>(memory_capacity_bytes(bring_up_device(config, mesh)));
  if (const double needed = one_rank_bytes(config); needed > capacity / 2 / (gpu ? 1 : mesh.local_size())) {
    const int64_t was = config.model.num_layers;
    config.model.num_layers = fewest_layers(config);
    notes.push_back("one rank cannot hold the " + std::to_string(was) + "-layer model (" + human_bytes(needed) +
                    " of state): both runs use the same architecture with " + std::to_string(config.model.num_layers) +
                    " layers");
  }
  if (mesh.rank() == 0) {
    std::cout << "check: " << parsed.recipe << " on " << world << " ranks (dp " << mesh.layout().degrees().dp << ", tp "
              << degrees.tp << ", pp " << degrees.pp << ", ulysses " << degrees.ulysses << ", ring " << degrees.ring
              << ", ep " << degrees.ep << ", zero " << config.parallel.zero << ") against one rank, " << steps
              << " steps\n";
    for (const auto& n : notes) std::cout << "check: " << n << "\n";
    std::cout << std::flush;
  }
  const CheckReport report = check_against_one_rank(config, mesh, steps);
  if (mesh.rank() == 0) std::cout << describe(report) << std::flush;
  return report.passed() ? 0 : 1;
}

int run_data(const Args& args) {
  if (wants_help(args) || args.empty()) return print_help("data");
  const std::string& first = args[0];
  const bool recipe =
      first.size() > 5 && (first.substr(first.size() - 5) == ".yaml" || first.substr(first.size() - 4) == ".yml");
  std::vector<std::string> paths = args;
  for (const auto& path : paths) require_utf8(path, "data: argument");
  DataConfig data;
  if (recipe) {
    auto parsed = parse(args, "data", {});
    data = load_config(parsed.recipe, parsed.overrides).data;
    if (data.source != DataSourceKind::indexed)
      fail(parsed.recipe + ": data.source is " + name(data.source) + ": `longtrain data` describes indexed datasets");
    paths.clear();
    if (data.mixture.empty()) paths.push_back(data.path);
    for (const auto& m : data.mixture) paths.push_back(m.path);
  }
  std::vector<DatasetStats> stats;
  for (const auto& path : paths) {
    stats.push_back(dataset_stats(IndexedDataset(path), path, data.upsample_long.min_length));
    std::cout << describe(stats.back());
  }
  if (recipe) std::cout << describe_mixture(data, stats);
  return 0;
}

// A process alone evaluates the whole model whatever the recipe's layout;
// under mpirun every rank runs its part of the recipe's layout.
int run_eval(const Args& args, MpiSession& mpi) {
  if (wants_help(args)) return print_help("eval");
  auto parsed = parse(args, "eval", {"--checkpoint", "--output"});
  const bool checkpoint = parsed.flags.count("--checkpoint") > 0;
  const int world = mpi.world_size();
  Config config;
  Degrees degrees;
  std::string path;
  agree_on_setup(
      [&] {
        check_launch(world);
        config = load_config(parsed.recipe, parsed.overrides);
        if (!checkpoint && config.init.from_hf.empty())
          fail("eval: missing --checkpoint DIR (or init.from_hf in the recipe)");
        if (world == 1) config.parallel = config.parallel.on_one_rank();
        degrees = resolve_degrees(config, world);
        check_trainable(config);
        config.train.precision = resolve_precision(config.train.precision, config.train.device);
        path = checkpoint ? resolve_checkpoint(parsed.flags.at("--checkpoint")) : config.init.from_hf;
      },
      config.parallel.timeout_s);
  agree_on_job(config, checkpoint ? path : "");
  Mesh& mesh = mpi.create_mesh(Layout(degrees), config.parallel.timeout_s, device_transport(config));
  const at::Device device = bring_up_device(config, mesh);
  at::set_num_threads(static_cast<int>(default_threads(config.train.threads, mesh.local_size())));
  if (config.train.bf16()) check_bf16_device(device);
  // Under ZeRO-3 the weights stay sharded as the training held them, each
  // layer gathered as it runs (the replicas in lockstep).
  ModelState owner;
  const bool sharded = config.parallel.zero == 3;
  RankModel rank = build_rank_model(config, mesh, device, owner.layer_fetch(config));
  owner.own(config, mesh, rank, device, /*training=*/false);
  TrainState state;
  auto load = [&] {
    if (checkpoint) load_checkpoint(path, *rank.model, nullptr, &state);
    else load_hf_weights(path, *rank.model);
  };
  agree_on(mesh.group(Group::world), [&] { owner.on_masters(load); });
  rank.model->eval();
  EvalReport report;
  owner.with_step_weights([&] {
    report = evaluate(layout_scorer(*rank.model, mesh, config.parallel, device, compute_dtype(config.train)), config,
                      replica_share(mesh, sharded));
  });
  if (mesh.rank() != 0) return 0;
  std::cout << (checkpoint ? "checkpoint: " : "hugging face model: ") << path << "\n";
  std::cout << describe(report, config);
  // The figures at full precision, a line per evaluation, as training's eval.jsonl.
  auto record = to_json(report);
  if (checkpoint) record["checkpoint"] = path, record["step"] = state.step;
  else record["hf_model"] = path;
  const std::string out = parsed.flags.count("--output") ? parsed.flags.at("--output") : config.run_dir + "/eval.jsonl";
  append_line(out, record.dump());
  std::cout << "results appended to " << out << "\n";
  return 0;
}

namespace {

// A path of a run's resolved recipe, from a command run in another folder:
// an absolute one as it is; a relative one is relative to the folder the
// run was started in, known only when its run_dir from here is RUN_DIR.
std::optional<std::string> path_of_run(const Config& config, const std::string& run_dir, const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code error;
  if (fs::path(path).is_absolute() || fs::equivalent(config.run_dir, run_dir, error)) return path;
  return std::nullopt;
}

// Where a run's checkpoints are: RUN_DIR/checkpoints unless the recipe put
// them elsewhere.
std::string checkpoints_of_run(const Config& config, const std::string& run_dir) {
  if (config.checkpoint.dir.empty()) return run_dir + "/checkpoints";
  if (auto path = path_of_run(config, run_dir, config.checkpoint.dir)) return *path;
  fail(run_dir + "/config.yaml: checkpoint.dir '" + config.checkpoint.dir +
       "' is relative to the folder the run was started in: run export from there, or pass --checkpoint DIR");
}

// --shard-gb: a finite number of GB a shard may hold.
double shard_gb(const std::string& text) {
  char* end = nullptr;
  const double gb = std::strtod(text.c_str(), &end);
  if (end == text.c_str() || *end != '\0' || !(gb >= 1e-3 && gb <= 1e6))
    fail("export: --shard-gb '" + excerpt(text) + "' must be a number of GB from 0.001 to 1000000");
  return gb;
}

}  // namespace

int run_export(const Args& args) {
  if (wants_help(args)) return print_help("export");
  auto parsed = parse(args, "export", {"--hf", "--checkpoint", "--dtype", "--shard-gb"});
  if (!parsed.flags.count("--hf")) fail("export: missing --hf OUT (the directory to write)");
  // The run's resolved recipe; the HF model it may have started from is
  // not needed any more, but its tokenizer files go with the export.
  const std::string recipe = parsed.recipe + "/config.yaml";
  const Config config = load_config(recipe, {"init.from_hf=''"});
  const std::string path = resolve_checkpoint(
      parsed.flags.count("--checkpoint") ? parsed.flags.at("--checkpoint") : checkpoints_of_run(config, parsed.recipe));
  LlamaForCausalLM model(config.model);
  load_checkpoint(path, *model, nullptr, nullptr);
  HfExportOptions options;
  if (parsed.flags.count("--dtype")) options.dtype = parsed.flags.at("--dtype");
  if (parsed.flags.count("--shard-gb")) options.shard_gb = shard_gb(parsed.flags.at("--shard-gb"));
  const std::string out = parsed.flags.at("--hf");
  // The HF model the run started from, if still there: its tokenizer files
  // go with the export.
  const YAML::Node started = YAML::LoadFile(recipe)["init"]["from_hf"];
  const std::string from = started && started.IsScalar() ? started.Scalar() : "";
  const auto located = from.empty() ? std::nullopt : path_of_run(config, parsed.recipe, from);
  const std::string tokenizer = located && std::filesystem::is_directory(*located) ? *located : "";
  if (!from.empty() && !located)
    std::cout << "export: no tokenizer files: init.from_hf '" << from
              << "' is relative to the folder the run was started in (copy them from there)\n";
  const auto copied = export_hf(config.model, *model, out, options, tokenizer);
  std::cout << "exported " << path << " to " << out << " (" << options.dtype << ")"
            << describe_copied(copied, tokenizer) << "\n";
  return 0;
}

}  // namespace lt
