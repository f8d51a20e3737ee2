// The `longtrain` subcommands. Each returns the process exit code and throws
// lt::Error for anything a user can fix.
#pragma once
#include <string>
#include <vector>

namespace lt {

class MpiSession;

using Args = std::vector<std::string>;

// Thrown by every rank when all of them found the same error while setting
// up (the recipe and the world are the same everywhere): rank 0 prints it,
// the others stay quiet, and all exit with the user-error code.
struct AgreedError {
  std::string message;
  bool print;
};

int run_train(const Args& args, MpiSession& mpi);
int run_plan(const Args& args);
int run_eval(const Args& args);
int run_export(const Args& args);
int print_help(const std::string& command);

}  // namespace lt
