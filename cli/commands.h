// The `longtrain` subcommands. Each returns the process exit code and throws
// lt::Error for anything a user can fix.
#pragma once
#include <string>
#include <vector>

namespace lt {

class MpiSession;

using Args = std::vector<std::string>;

int run_train(const Args& args, MpiSession& mpi);
int run_plan(const Args& args);
int run_check(const Args& args, MpiSession& mpi);
int run_eval(const Args& args, MpiSession& mpi);
int run_export(const Args& args);
int run_data(const Args& args);
int print_help(const std::string& command);

}  // namespace lt
