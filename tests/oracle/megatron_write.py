"""Writes indexed datasets with megatron-core's own IndexedDatasetBuilder (the
writer behind Megatron's tools/preprocess_data.py) for the reader's oracle
test, plus the documents it wrote as JSON. Exits 77 (ctest: skipped) when
megatron-core is not installed.

usage: megatron_write.py OUT_DIR
"""
import json
import os
import random
import sys

try:
    import numpy
    import torch
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder
except ImportError as error:
    print(f"skipped: {error}")
    sys.exit(77)


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    rng = random.Random(5)
    documents = [[[rng.randrange(60000) for _ in range(rng.randrange(1, 40))] for _ in range(rng.randrange(1, 4))]
                 for _ in range(25)]
    for name, dtype in (("uint16", numpy.uint16), ("int32", numpy.int32)):
        prefix = os.path.join(out, name)
        builder = IndexedDatasetBuilder(prefix + ".bin", dtype=dtype)
        for document in documents:
            for sentence in document:
                builder.add_item(torch.tensor(sentence))
            builder.end_document()
        builder.finalize(prefix + ".idx")
    with open(os.path.join(out, "documents.json"), "w") as f:
        json.dump([sum(document, []) for document in documents], f)


if __name__ == "__main__":
    main()
