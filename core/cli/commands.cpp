#include "core/cli/commands.h"

#include <ATen/Parallel.h>

#include <iostream>

#include "core/checkpoint/checkpoint.h"
#include "core/config/config.h"
#include "core/train/evaluate.h"
#include "core/train/trainer.h"
#include "core/util/error.h"
#include "core/util/resources.h"

namespace lt {
namespace {

const char* kProgramHelp = R"(longtrain: train LLMs on very long sequences

usage: longtrain <command> [arguments]

commands:
  train RECIPE [key.path=value ...]                 train from a YAML recipe
  eval RECIPE --checkpoint DIR [key.path=value ...] held-out loss, perplexity, passkey accuracy
  help [command]                                    this text, or a command's

Run with mpirun for several processes; every option of a recipe can be
overridden on the command line, e.g. train.lr=3e-4 data.seq_len=8K.
)";

const char* kTrainHelp = R"(usage: longtrain train RECIPE [key.path=value ...]

Trains the model a recipe describes. The run directory (run_dir) receives the
resolved config (config.yaml), train.log, metrics.jsonl and, unless
checkpoint.dir says otherwise, checkpoints/step_N. With checkpoint.resume=auto
a run continues from its newest complete checkpoint, bit-exactly.

examples:
  longtrain train recipes/tiny-passkey.yaml
  longtrain train recipes/tiny-passkey.yaml train.steps=50 run_dir=runs/short
)";

const char* kEvalHelp = R"(usage: longtrain eval RECIPE --checkpoint DIR [key.path=value ...]

Loads the weights of a checkpoint (a step_N directory, or a directory of them:
the newest is used) into the recipe's model and reports the loss and
perplexity over eval.sequences held-out sequences; for the passkey corpus also
retrieval accuracy at data.seq_len tokens.
)";

bool wants_help(const Args& args) {
  for (const auto& a : args)
    if (a == "--help" || a == "-h") return true;
  return false;
}

// Splits "RECIPE [--flag value] [key=value ...]".
struct Parsed {
  std::string recipe;
  std::string checkpoint;
  std::vector<std::string> overrides;
};

Parsed parse(const Args& args, const char* command, bool takes_checkpoint) {
  Parsed p;
  for (size_t i = 0; i < args.size(); ++i) {
    const auto& a = args[i];
    if (takes_checkpoint && a == "--checkpoint") {
      if (i + 1 >= args.size()) fail(std::string(command) + ": --checkpoint needs a directory");
      p.checkpoint = args[++i];
    } else if (a.rfind("--", 0) == 0) {
      fail(std::string(command) + ": unknown option '" + a + "' (see longtrain " + command + " --help)");
    } else if (p.recipe.empty() && a.find('=') == std::string::npos) {
      p.recipe = a;
    } else {
      p.overrides.push_back(a);
    }
  }
  if (p.recipe.empty()) fail(std::string(command) + ": missing RECIPE (see longtrain " + command + " --help)");
  if (takes_checkpoint && p.checkpoint.empty()) fail(std::string(command) + ": missing --checkpoint DIR");
  return p;
}

}  // namespace

int print_help(const std::string& command) {
  if (command == "train") std::cout << kTrainHelp;
  else if (command == "eval") std::cout << kEvalHelp;
  else std::cout << kProgramHelp;
  return 0;
}

int run_train(const Args& args) {
  if (wants_help(args)) return print_help("train");
  auto parsed = parse(args, "train", false);
  Trainer(load_config(parsed.recipe, parsed.overrides)).run();
  return 0;
}

int run_eval(const Args& args) {
  if (wants_help(args)) return print_help("eval");
  auto parsed = parse(args, "eval", true);
  const Config config = load_config(parsed.recipe, parsed.overrides);
  at::set_num_threads(static_cast<int>(default_threads(config.train.threads)));
  const at::Device device = device_for(config.train.device);
  const std::string path = resolve_checkpoint(parsed.checkpoint);
  LlamaForCausalLM model(config.model);
  load_checkpoint(path, *model, nullptr, nullptr);
  model->to(device);
  model->eval();
  std::cout << "checkpoint: " << path << "\n";
  if (config.eval.sequences > 0) std::cout << describe(evaluate_loss(*model, config, device)) << "\n";
  if (config.data.source == "passkey" && config.eval.passkey_samples > 0)
    std::cout << describe(evaluate_passkey(*model, config, config.data.seq_len, device), config.data.passkey.digits)
              << "\n";
  return 0;
}

}  // namespace lt
