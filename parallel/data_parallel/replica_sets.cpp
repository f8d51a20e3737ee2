#include "parallel/data_parallel/replica_sets.h"

#include <algorithm>
#include <set>

namespace lt {
namespace {

enum Kind { kSplit, kNorm, kPartialNorm, kSharedKv, kTied, kExpert, kKinds };

bool contains(const std::string& text, const char* part) { return text.find(part) != std::string::npos; }

Kind kind_of(const std::string& name, const TensorSlice& slice, bool tied_across_stages, bool expert_parallel) {
  if (tied_across_stages && contains(name, "embed_tokens")) return kTied;
  if (expert_parallel && contains(name, ".mlp.experts.")) return kExpert;
  // A norm each tp rank saw only its share of (its tokens, or its heads).
  if (contains(name, "norm")) return slice.partial ? kPartialNorm : kNorm;
  return slice.copies > 1 ? kSharedKv : kSplit;
}

}  // namespace

std::vector<ReplicaSet> replica_sets(Mesh& mesh, LlamaForCausalLMImpl& model,
                                     const std::vector<NamedParameter>& elsewhere) {
  const auto& d = mesh.layout().degrees();
  const auto c = mesh.coord();
  const ModelConfig& config = model.config();
  const bool tied_across_stages = config.tie_embeddings && d.pp > 1;
  // Ranks sharing kv heads hold the same slice of k_proj: where it starts
  // names them (every stage has a layer).
  TensorSlice kv;
  for (const auto& item : model.named_parameters())
    if (contains(item.key(), "k_proj.weight")) {
      kv = model.slice_of(item.key());
      break;
    }
  Communicator* groups[kKinds] = {
      &mesh.group(Group::dp_sp), &mesh.group(Group::dp_sp),
      &mesh.group(Group::stage), &mesh.subgroup("kv_dp_sp", static_cast<int>(c.pp * kv.full + kv.offset)),
      &mesh.group(Group::tied),  &mesh.group(Group::ep_dp),
  };
  // One set per group and copy count, parameters in registration order
  // (without tp, everything but tied embeddings is one set over dp x sp).
  std::vector<ReplicaSet> sets;
  std::set<std::string> skip;
  for (const auto& p : elsewhere) skip.insert(p.name);
  for (auto& item : model.named_parameters()) {
    if (skip.count(item.key())) continue;
    const TensorSlice slice = model.slice_of(item.key());
    const Kind kind = kind_of(item.key(), slice, tied_across_stages, d.ep > 1);
    Communicator* group = groups[kind];
    const int64_t copies = slice.copies * (kind == kTied ? 2 : 1);
    auto set = std::find_if(sets.begin(), sets.end(),
                            [&](const ReplicaSet& s) { return s.group == group && s.copies == copies; });
    if (set == sets.end())
      set = sets.insert(
          sets.end(), ReplicaSet{group, {}, copies, kind == kExpert ? &mesh.group(Group::ep) : nullptr, kind == kTied});
    set->params.push_back({item.key(), item.value()});
  }
  return sets;
}

}  // namespace lt
