#include "cli/job_agreement.h"

#include <mpi.h>
#include <yaml-cpp/yaml.h>

#include <filesystem>
#include <map>

#include "core/util/checksum.h"
#include "core/util/error.h"
#include "parallel/mesh/mesh.h"
#include "train/checkpoint.h"

namespace lt {
namespace fs = std::filesystem;
namespace {

// Every scalar of the resolved recipe as "key.path: value".
void flatten(const YAML::Node& node, const std::string& path, std::vector<std::string>& lines) {
  if (node.IsMap()) {
    for (const auto& item : node) flatten(item.second, (path.empty() ? "" : path + ".") + item.first.Scalar(), lines);
  } else if (node.IsSequence()) {
    lines.push_back(path + ": " + std::to_string(node.size()) + " items");
    for (size_t i = 0; i < node.size(); ++i) flatten(node[i], path + "[" + std::to_string(i) + "]", lines);
  } else {
    lines.push_back(path + ": " + (node.IsNull() ? "" : node.Scalar()));
  }
}

std::string size_of(const std::string& path) {
  std::error_code error;
  const auto bytes = fs::file_size(path, error);
  return error ? "missing" : std::to_string(bytes) + " bytes";
}

// A file by size and content.
std::string identity_of(const std::string& path) {
  const std::string size = size_of(path);
  return size == "missing" ? size : size + ", xxh3 " + file_checksum(path);
}

void dataset(const std::string& prefix, std::vector<std::string>& lines) {
  lines.push_back("input " + prefix + ".bin: " + size_of(prefix + ".bin"));
  lines.push_back("input " + prefix + ".idx: " + identity_of(prefix + ".idx"));
}

// An HF model: its config by content, its weights by size (hashing tens of
// GB on every rank would delay every start).
void hf_model(const std::string& dir, std::vector<std::string>& lines) {
  lines.push_back("input " + dir + "/config.json: " + identity_of(dir + "/config.json"));
  std::error_code error;
  std::map<std::string, std::string> weights;  // by name: the same order on every rank
  for (const auto& entry : fs::directory_iterator(dir, error)) {
    const std::string name = entry.path().filename().string();
    if (name.ends_with(".safetensors")) weights[name] = size_of(entry.path().string());
    if (name.ends_with(".safetensors.index.json")) weights[name] = identity_of(entry.path().string());
  }
  for (const auto& [name, identity] : weights) lines.push_back("input " + dir + "/" + name + ": " + identity);
}

void checkpoint(const std::string& path, std::vector<std::string>& lines) {
  try {
    const std::string step = resolve_checkpoint(path);
    lines.push_back("input checkpoint " + path + ": " + step + ", manifest xxh3 " +
                    file_checksum(step + "/manifest.json"));
  } catch (const Error&) {
    lines.push_back("input checkpoint " + path + ": not a readable checkpoint");
  }
}

// "0, 2-3" for ranks {0, 2, 3}.
std::string ranks_text(const std::vector<int>& ranks) {
  std::string text;
  for (size_t i = 0; i < ranks.size();) {
    size_t j = i;
    while (j + 1 < ranks.size() && ranks[j + 1] == ranks[j] + 1) ++j;
    text += (text.empty() ? "" : ", ") + std::to_string(ranks[i]) + (j > i ? "-" + std::to_string(ranks[j]) : "");
    i = j + 1;
  }
  return std::string(ranks.size() > 1 ? "ranks " : "rank ").append(text);
}

std::string key_of(const std::string& line) { return line.substr(0, line.find(": ")); }

std::string value_of(const std::string& line) {
  const auto colon = line.find(": ");
  const std::string value = colon == std::string::npos ? "" : line.substr(colon + 2);
  return "'" + (value.size() > 120 ? value.substr(0, 120) + "..." : value) + "'";
}

}  // namespace

std::vector<std::string> job_identity(const Config& config, const std::string& checkpoint_path) {
  std::vector<std::string> lines;
  flatten(YAML::Load(to_yaml(config)), "", lines);
  const auto& data = config.data;
  if (data.source == DataSourceKind::indexed) {
    if (!data.path.empty()) dataset(data.path, lines);
    for (const auto& entry : data.mixture) dataset(entry.path, lines);
  }
  if (!config.init.from_hf.empty()) hf_model(config.init.from_hf, lines);
  const std::string& resume = config.checkpoint.resume;
  if (resume != "none" && resume != "auto") checkpoint(resume, lines);
  if (!checkpoint_path.empty()) checkpoint(checkpoint_path, lines);
  return lines;
}

std::string disagreement(const std::vector<std::vector<std::string>>& by_rank) {
  size_t longest = 0;
  for (const auto& lines : by_rank) longest = std::max(longest, lines.size());
  for (size_t i = 0; i < longest; ++i) {
    std::map<std::string, std::vector<int>> ranks_of;  // a line, and the ranks that have it
    std::vector<std::string> order;
    for (size_t r = 0; r < by_rank.size(); ++r) {
      const std::string line = i < by_rank[r].size() ? by_rank[r][i] : "";
      if (!ranks_of.count(line)) order.push_back(line);
      ranks_of[line].push_back(static_cast<int>(r));
    }
    if (order.size() == 1) continue;
    const std::string key = key_of(order.front().empty() ? order.back() : order.front());
    std::string values;
    for (const auto& line : order)
      values += (values.empty() ? "" : ", ") + (key_of(line) == key ? value_of(line) : std::string("absent")) + " on " +
                ranks_text(ranks_of[line]);
    return "the ranks of this job disagree on " + excerpt(key) + ": " + values +
           ". Give every rank the same recipe, overrides and files";
  }
  return "";
}

void agree_on_job(const Config& config, const std::string& checkpoint_path) {
  int rank = 0, world = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  if (world == 1) return;
  std::string text;
  // One line each: a value's own newlines escaped.
  for (const auto& line : job_identity(config, checkpoint_path)) text += printable(line) + "\n";
  const auto texts = setup_gather(MPI_COMM_WORLD, text, "agreeing on the recipe and inputs", config.parallel.timeout_s);
  std::vector<std::vector<std::string>> by_rank;
  for (const auto& t : texts) {
    by_rank.emplace_back();
    for (size_t start = 0, end; (end = t.find('\n', start)) != std::string::npos; start = end + 1)
      by_rank.back().push_back(t.substr(start, end - start));
  }
  if (const auto problem = disagreement(by_rank); !problem.empty()) throw AgreedError(problem, rank == 0);
}

}  // namespace lt
