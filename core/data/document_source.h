// An endless, deterministic stream of documents: document(i) depends only on
// i, the seed and `max_length`, so a data position is one integer and
// resuming is exact. Sources that generate documents (the passkey corpus)
// keep them within `max_length`, the current sequence length; stored
// documents are what they are.
#pragma once
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/config/config.h"

namespace lt {

class DocumentSource {
 public:
  virtual ~DocumentSource() = default;
  virtual std::vector<int64_t> document(int64_t index, int64_t max_length) const = 0;
  // What the stream is: a data position means the same documents only
  // under the same fingerprint. Keys are named for the recipe keys they
  // come from; empty (a source of tests): not checked.
  virtual nlohmann::json fingerprint() const { return nlohmann::json::object(); }
};

enum class Split { Train, Eval };

// The source a recipe's data section describes (passkey corpus or indexed files).
std::unique_ptr<DocumentSource> make_document_source(const DataConfig& data, int64_t vocab_size, uint64_t seed,
                                                     Split split);

// Refuses to resume a checkpoint whose data stream (`recorded`) differs
// from the recipe's (`now`), naming each key that changed. A checkpoint
// from before fingerprints (an empty one) resumes unchecked.
void check_data_fingerprint(const std::string& checkpoint, const nlohmann::json& recorded, const nlohmann::json& now);

}  // namespace lt
