// The `longtrain` program. Errors are caught here, once: a user error prints
// one line and exits 2; anything else prints its first line and exits 1. In
// a job of several ranks the failing rank names itself and aborts the job,
// so no rank is left waiting in a collective; an error all ranks meet is
// printed once, by rank 0.
#include <c10/util/Exception.h>

#include <chrono>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <string>
#include <thread>

#include "cli/commands.h"
#include "core/util/error.h"
#include "parallel/mesh/mesh.h"

namespace {

std::unique_ptr<lt::MpiSession> mpi;  // `train` and `eval` run as MPI jobs
constexpr int kAbortGraceSeconds = 5;

std::string first_line(const std::string& text) { return text.substr(0, text.find('\n')); }

// What a user can do about an allocation that failed: the sizes that ask it.
std::string out_of_memory(const std::string& message) {
  return "out of memory: " + first_line(message).substr(0, 300) +
         ". The model or the step does not fit this machine: check model.* sizes, data.seq_len and "
         "train.micro_batch_size, and see what a rank needs with `longtrain plan RECIPE --world N`";
}

int report(const std::string& kind, const std::string& message, int code) {
  const bool job = mpi && mpi->world_size() > 1;
  // An error every rank meets (a step past train.max_skipped_steps, a full
  // disk) is printed once: by rank 0, whose abort ends the job while the
  // others wait a moment. A rank failing alone still names itself.
  if (job && mpi->world_rank() != 0) std::this_thread::sleep_for(std::chrono::seconds(2));
  std::cerr << "longtrain: " << kind << (job ? " on rank " + std::to_string(mpi->world_rank()) : "") << ": "
            << first_line(message) << std::endl;
  // Every group's operations end here (NCCL: ncclCommAbort), so that no
  // kernel or worker left waiting on a peer holds the process.
  lt::Communicator::abort_all("the job is ending after an error");
  if (!job) return code;
  // An abort that can reach no one (this host cut off from the others)
  // must not hold the process: it leaves on its own after a grace period.
  std::thread([code] {
    std::this_thread::sleep_for(std::chrono::seconds(kAbortGraceSeconds));
    std::_Exit(code);
  }).detach();
  MPI_Abort(MPI_COMM_WORLD, code);
  std::_Exit(code);
}

int dispatch(const std::vector<std::string>& argv) {
  if (argv.empty() || argv[0] == "--help" || argv[0] == "-h") return lt::print_help("");
  const std::string& command = argv[0];
  const lt::Args rest(argv.begin() + 1, argv.end());
  if (command == "train") return lt::run_train(rest, *mpi);
  if (command == "eval") return lt::run_eval(rest, *mpi);
  if (command == "plan") return lt::run_plan(rest);
  if (command == "check") return lt::run_check(rest, *mpi);
  if (command == "export") return lt::run_export(rest);
  if (command == "data") return lt::run_data(rest);
  if (command == "help") return lt::print_help(rest.empty() ? "" : rest[0]);
  lt::fail("unknown command '" + command + "'; commands: train, eval, check, plan, export, data, help");
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const std::string command = argc > 1 ? argv[1] : "";
    if (command == "train" || command == "eval" || command == "check")
      mpi = std::make_unique<lt::MpiSession>(&argc, &argv);
    return dispatch(std::vector<std::string>(argv + 1, argv + argc));
  } catch (const lt::AgreedError& e) {
    if (e.print) std::cerr << "longtrain: error: " << first_line(e.what()) << std::endl;
    return 2;
  } catch (const lt::Error& e) {
    return report("error", e.what(), 2);
  } catch (const c10::OutOfMemoryError& e) {
    return report("error", out_of_memory(e.what_without_backtrace()), 2);
  } catch (const c10::Error& e) {
    const std::string message = e.what_without_backtrace();
    // LibTorch's CPU allocator fails with a plain enforce error.
    if (message.find("can't allocate memory") != std::string::npos) return report("error", out_of_memory(message), 2);
    return report("internal error", message, 1);
  } catch (const std::exception& e) {
    return report("error", e.what(), 1);
  }
}
