#include "core/util/files.h"

#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>

#include "core/util/error.h"

namespace lt {

void write_text_synced(const std::string& path, const std::string& text) {
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> file(std::fopen(path.c_str(), "wb"), &std::fclose);
  if (!file) fail(path + ": cannot create: " + std::strerror(errno));
  const bool ok = std::fwrite(text.data(), 1, text.size(), file.get()) == text.size() && std::fflush(file.get()) == 0 &&
                  ::fsync(fileno(file.get())) == 0;
  if (!ok || std::fclose(file.release()) != 0)
    fail(path + ": write failed: " + std::strerror(errno) + " (is the disk full?)");
}

void sync_directory(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

void publish_directory(const std::string& temp, const std::string& final) {
  sync_directory(temp);
  namespace fs = std::filesystem;
  std::error_code error;
  if (fs::exists(final)) {
    if (::renameat2(AT_FDCWD, temp.c_str(), AT_FDCWD, final.c_str(), RENAME_EXCHANGE) != 0)
      fail(final + ": cannot replace: " + std::strerror(errno));
    fs::remove_all(temp, error);  // the old one, now under the temporary name
  } else {
    fs::rename(temp, final, error);
    if (error) fail(final + ": cannot move " + temp + " there: " + error.message());
  }
  sync_directory(fs::absolute(final).parent_path().string());
}

bool is_plain_file_name(const std::string& name) {
  const bool printable =
      std::none_of(name.begin(), name.end(), [](char c) { return static_cast<unsigned char>(c) < 0x20; });
  return !name.empty() && name != "." && name != ".." && name.find('/') == std::string::npos && printable;
}

bool is_utf8(const std::string& text) {
  for (size_t i = 0, length; i < text.size(); i += length)
    if ((length = utf8_sequence(text, i)) == 0) return false;
  return true;
}

void require_utf8(const std::string& text, const std::string& what) {
  if (!is_utf8(text))
    fail(what + " '" + excerpt(text, 400) +
         "' is not valid UTF-8: longtrain records paths and names in JSON and YAML, " +
         "which hold only UTF-8; rename it");
}

void append_line(const std::string& path, const std::string& line) {
  const auto folder = std::filesystem::path(path).parent_path();
  std::error_code ignored;
  if (!folder.empty()) std::filesystem::create_directories(folder, ignored);
  std::ofstream out(path, std::ios::app);
  out << line << "\n";
  out.flush();
  if (!out) fail(path + ": cannot append to it (" + std::strerror(errno) + "): check the folder and free space");
}

}  // namespace lt
