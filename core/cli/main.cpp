// The `longtrain` program. Errors are caught here, once: a user error prints
// one line and exits 2; anything else prints its first line and exits 1.
#include <c10/util/Exception.h>

#include <iostream>
#include <string>

#include "core/cli/commands.h"
#include "core/util/error.h"

namespace {

std::string first_line(const std::string& text) { return text.substr(0, text.find('\n')); }

int dispatch(const std::vector<std::string>& argv) {
  if (argv.empty() || argv[0] == "--help" || argv[0] == "-h") return lt::print_help("");
  const std::string& command = argv[0];
  const lt::Args rest(argv.begin() + 1, argv.end());
  if (command == "train") return lt::run_train(rest);
  if (command == "eval") return lt::run_eval(rest);
  if (command == "help") return lt::print_help(rest.empty() ? "" : rest[0]);
  lt::fail("unknown command '" + command + "'; commands: train, eval, help");
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return dispatch(std::vector<std::string>(argv + 1, argv + argc));
  } catch (const lt::Error& e) {
    std::cerr << "longtrain: error: " << e.what() << std::endl;
    return 2;
  } catch (const c10::Error& e) {
    std::cerr << "longtrain: internal error: " << first_line(e.what_without_backtrace()) << std::endl;
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "longtrain: error: " << first_line(e.what()) << std::endl;
    return 1;
  }
}
