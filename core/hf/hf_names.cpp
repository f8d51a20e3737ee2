#include "core/hf/hf_names.h"

namespace lt {
namespace {

// `text` with its first `from` replaced by `to`.
std::string replaced(std::string text, const std::string& from, const std::string& to) {
  const auto at = text.find(from);
  return at == std::string::npos ? text : text.replace(at, from.size(), to);
}

// The per-expert tensors of a stacked projection: `prefix`E.<projection>.weight.
std::vector<HfPiece> per_expert(const std::string& prefix, const ModelConfig& c,
                                const std::vector<std::pair<std::string, int64_t>>& projections) {
  std::vector<HfPiece> pieces;
  for (int64_t e = 0; e < c.moe.experts; ++e) {
    int64_t offset = 0;
    for (const auto& [projection, rows] : projections) {
      pieces.push_back({prefix + std::to_string(e) + "." + projection + ".weight", e, offset, rows});
      offset += rows;
    }
  }
  return pieces;
}

}  // namespace

std::vector<HfPiece> hf_pieces(const std::string& param, const ModelConfig& c) {
  const bool mixtral = c.family == Family::mixtral;
  const std::string name = mixtral ? replaced(param, ".mlp.", ".block_sparse_moe.") : param;
  const int64_t columns = c.expert_columns();
  if (name.ends_with(".experts.gate_up_proj")) {
    const std::string prefix = name.substr(0, name.size() - std::string("gate_up_proj").size());
    return per_expert(prefix, c, {{mixtral ? "w1" : "gate_proj", columns}, {mixtral ? "w3" : "up_proj", columns}});
  }
  if (name.ends_with(".experts.down_proj")) {
    const std::string prefix = name.substr(0, name.size() - std::string("down_proj").size());
    return per_expert(prefix, c, {{mixtral ? "w2" : "down_proj", c.hidden_size}});
  }
  return {{name}};
}

NamedTensorList hf_tensors(const NamedTensorList& ours, const ModelConfig& config) {
  NamedTensorList out;
  for (const auto& [name, tensor] : ours)
    for (const HfPiece& piece : hf_pieces(name, config))
      out.emplace_back(piece.name,
                       piece.expert < 0 ? tensor : tensor[piece.expert].narrow(0, piece.offset, piece.rows));
  return out;
}

bool hf_buffer(const std::string& name) { return name.ends_with("rotary_emb.inv_freq"); }

}  // namespace lt
