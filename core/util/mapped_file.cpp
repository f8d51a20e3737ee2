#include "core/util/mapped_file.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <mutex>

#include "core/util/error.h"

namespace lt {
namespace {

// The live mappings, for the SIGBUS handler: a mapped file truncated or
// rewritten while in use faults on its next read. Slots are claimed and
// released under a mutex and read, lock-free, by the handler.
struct Mapping {
  std::atomic<const uint8_t*> begin{nullptr};
  std::atomic<size_t> size{0};
  std::atomic<const char*> path{nullptr};
};
constexpr size_t kSlots = 1024;
Mapping mappings[kSlots];
std::mutex claiming;

void say(const char* text) {
  for (size_t left = std::strlen(text); left > 0;) {
    const ssize_t n = ::write(STDERR_FILENO, text, left);
    if (n <= 0) return;
    text += n, left -= static_cast<size_t>(n);
  }
}

// Async-signal-safe: names the file and ends the process (under mpirun,
// the job), or passes a fault that is not a mapped file's on.
void on_bus_error(int signal, siginfo_t* info, void*) {
  const auto* address = static_cast<const uint8_t*>(info->si_addr);
  for (auto& m : mappings) {
    const uint8_t* begin = m.begin.load();
    if (!begin || address < begin || address >= begin + m.size.load()) continue;
    say("longtrain: error: ");
    say(m.path.load());
    say(": changed or truncated while training (it is read in place, memory-mapped): replace data by writing a new "
        "file and renaming it over the old one, never by rewriting it in place (docs/data.md)\n");
    ::_exit(2);
  }
  ::signal(signal, SIG_DFL);
  ::raise(signal);
}

void track(const uint8_t* begin, size_t size, const std::string& path) {
  static std::once_flag installed;
  std::call_once(installed, [] {
    struct sigaction action {};
    action.sa_sigaction = on_bus_error;
    action.sa_flags = SA_SIGINFO;
    sigemptyset(&action.sa_mask);
    ::sigaction(SIGBUS, &action, nullptr);
  });
  std::lock_guard<std::mutex> lock(claiming);
  for (auto& m : mappings)
    if (!m.begin.load()) {
      m.path = path.c_str();
      m.size = size;
      m.begin = begin;  // last: the handler trusts a slot with a begin
      return;
    }
}

void untrack(const uint8_t* begin) {
  std::lock_guard<std::mutex> lock(claiming);
  for (auto& m : mappings)
    if (m.begin.load() == begin) m.begin = nullptr;
}

}  // namespace

MappedFile::MappedFile(const std::string& path) : path_(path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) fail(path + ": cannot open: " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    fail(path + ": cannot stat: " + std::strerror(errno));
  }
  size_ = static_cast<size_t>(st.st_size);
  if (size_ > 0) {
    void* p = ::mmap(nullptr, size_, PROT_READ, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
      ::close(fd);
      fail(path + ": cannot memory-map: " + std::strerror(errno));
    }
    data_ = static_cast<const uint8_t*>(p);
    track(data_, size_, path_);
  }
  ::close(fd);
}

MappedFile::~MappedFile() {
  if (!data_) return;
  untrack(data_);
  ::munmap(const_cast<uint8_t*>(data_), size_);
}

}  // namespace lt
