// Writing files so that a crash or a full disk never leaves a half-written
// one in place of a good one, and checking names that files name.
#pragma once
#include <string>

namespace lt {

// Writes `text` to `path` and fsyncs it; a failed write is an error naming
// the file (and no FILE leaks).
void write_text_synced(const std::string& path, const std::string& text);

// Appends `line` and a newline to `path` (a JSONL log), creating it and its
// folder; a file that cannot be written is an error naming it.
void append_line(const std::string& path, const std::string& line);

// Puts the complete directory `temp` in place of `final` in one step: a
// `final` there before is swapped out and only then removed, so a reader
// (or a crash) sees the old whole or the new whole, never neither.
void publish_directory(const std::string& temp, const std::string& final);

// fsync of a directory, so that renames inside it are durable.
void sync_directory(const std::string& dir);

// A name an index or manifest gives for a file beside it must be a plain
// name: no directory part, not "." or "..", no control character.
bool is_plain_file_name(const std::string& name);

// Whether `text` is well-formed UTF-8. Paths and names longtrain records
// (in JSON manifests, YAML configs) must be: JSON cannot hold other bytes.
bool is_utf8(const std::string& text);

// Fails, naming `what`, unless `text` is UTF-8.
void require_utf8(const std::string& text, const std::string& what);

}  // namespace lt
