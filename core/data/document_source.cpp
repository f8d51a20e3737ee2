#include "core/data/document_source.h"

#include "core/data/mixture_source.h"
#include "core/data/passkey_corpus.h"

namespace lt {

std::unique_ptr<DocumentSource> make_document_source(const DataConfig& data, int64_t vocab_size, uint64_t seed,
                                                     Split split) {
  // Held-out data comes from a disjoint stream of the same distribution.
  const uint64_t stream = split == Split::Train ? seed : seed ^ 0xe7a1e7a1e7a1ULL;
  if (data.source == "indexed") return std::make_unique<MixtureSource>(data, vocab_size, stream, split);
  return std::make_unique<PasskeyCorpus>(data.passkey, vocab_size, stream);
}

}  // namespace lt
