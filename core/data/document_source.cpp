#include "core/data/document_source.h"

#include "core/data/mixture_source.h"
#include "core/data/passkey_corpus.h"
#include "core/util/error.h"

namespace lt {

std::unique_ptr<DocumentSource> make_document_source(const DataConfig& data, int64_t vocab_size, uint64_t seed,
                                                     Split split) {
  // Held-out data comes from a disjoint stream of the same distribution.
  const uint64_t stream = split == Split::Train ? seed : seed ^ 0xe7a1e7a1e7a1ULL;
  if (data.source == DataSourceKind::indexed) return std::make_unique<MixtureSource>(data, vocab_size, stream, split);
  return std::make_unique<PasskeyCorpus>(data.passkey, vocab_size, stream);
}

void check_data_fingerprint(const std::string& checkpoint, const nlohmann::json& recorded, const nlohmann::json& now) {
  if (recorded.empty() || recorded == now) return;
  std::string changed;
  for (const auto& [key, value] : now.items()) {
    const auto before = recorded.contains(key) ? recorded.at(key).dump() : std::string("(none)");
    if (before != value.dump())
      changed += (changed.empty() ? "" : "; ") + key + ": " + before + " then, " + value.dump() + " now";
  }
  for (const auto& [key, value] : recorded.items())
    if (!now.contains(key)) changed += (changed.empty() ? "" : "; ") + key + ": " + value.dump() + " then, (none) now";
  fail(checkpoint + ": its data position is in another data stream than this recipe's (" + changed +
       "): restore those settings to resume exactly, or start a new run from its weights (longtrain export, then "
       "init.from_hf)");
}

}  // namespace lt
