#!/usr/bin/env python3
"""Turns text into the data longtrain trains on: Megatron's indexed dataset
(P_<key>_document.bin/.idx), byte-identical to what megatron-core's
IndexedDatasetBuilder writes for the same token ids, so Megatron's tools and
longtrain read the same files. The flags are those of Megatron's
tools/preprocess_data.py.

  scripts/preprocess.py --input data/ --tokenizer models/Llama-3.1-8B \\
      --output-prefix data/corpus --append-eod --workers 8

--input     JSONL files (.jsonl, .json, .jsonl.gz), parquet files, folders of
            them, or a `datasets` dataset saved with save_to_disk.
--tokenizer a folder (or file) with an HF tokenizer.json or a SentencePiece
            tokenizer.model. tokenizer.json encodes as transformers does (its
            own special tokens, e.g. Llama's BOS); SentencePiece adds none,
            as Megatron's SentencePieceTokenizer.

Each record is one document (one sequence). Ids are uint16 below a
vocabulary of 65,500 and int32 above (Megatron's choice). Empty documents
are skipped and counted. A bad line ends the run with one line naming its
file and line; nothing is left half-written (outputs appear by rename).
"""
import argparse
import gzip
import json
import multiprocessing
import os
import struct
import sys
import time

BATCH = 256  # records per task handed to a worker
DTYPES = {"uint16": (8, "<u2", 2), "int32": (4, "<i4", 4)}  # megatron-core's dtype codes
EOD_NAMES = ("</s>", "<|endoftext|>", "<|end_of_text|>", "<eos>", "<|eot_id|>")


class InputError(Exception):
    """A problem the user fixes in the input or the flags: one line."""


# --- tokenizers -----------------------------------------------------------------------------


class Tokenizer:
    """An HF tokenizer.json or a SentencePiece model, found in a folder or given as a file."""

    def __init__(self, path):
        self.path = path
        candidates = [path] if os.path.isfile(path) else [os.path.join(path, n)
                                                           for n in ("tokenizer.json", "tokenizer.model")]
        found = [c for c in candidates if os.path.isfile(c)]
        if not found:
            raise InputError(f"{path}: no tokenizer.json or tokenizer.model there: pass --tokenizer the model folder")
        self.file = found[0]
        if self.file.endswith(".json"):
            try:
                from tokenizers import Tokenizer as HfTokenizer
            except ImportError:
                raise InputError("the HF `tokenizers` package is missing: run scripts/setup.sh")
            self.hf = HfTokenizer.from_file(self.file)
            self.sp = None
            self.vocab_size = self.hf.get_vocab_size(with_added_tokens=True)
        else:
            try:
                import sentencepiece
            except ImportError:
                raise InputError("the `sentencepiece` package is missing: run scripts/setup.sh")
            self.sp = sentencepiece.SentencePieceProcessor(model_file=self.file)
            self.hf = None
            self.vocab_size = self.sp.get_piece_size()

    def eod(self):
        """The end-of-document id: the model's eos token."""
        if self.sp is not None:
            if self.sp.eos_id() >= 0:
                return self.sp.eos_id()
        else:
            names = list(EOD_NAMES)
            config = os.path.join(os.path.dirname(self.file), "tokenizer_config.json")
            if os.path.isfile(config):
                with open(config) as f:
                    eos = json.load(f).get("eos_token")
                names.insert(0, eos.get("content") if isinstance(eos, dict) else eos)
            for name in names:
                if name and self.hf.token_to_id(name) is not None:
                    return self.hf.token_to_id(name)
        raise InputError(f"{self.file}: --append-eod needs an end-of-document token and this tokenizer names none "
                         f"(looked for tokenizer_config.json's eos_token and {', '.join(EOD_NAMES)})")

    def encode(self, texts):
        if self.sp is not None:
            return self.sp.encode(texts)
        return [e.ids for e in self.hf.encode_batch(texts)]


# --- inputs ---------------------------------------------------------------------------------


def input_files(paths):
    """Every input file, folders expanded in name order."""
    files = []
    for path in paths:
        if not os.path.exists(path):
            raise InputError(f"{path}: no such file or folder")
        if os.path.isdir(path):
            if os.path.isfile(os.path.join(path, "dataset_info.json")):
                files.append(path)  # a datasets.save_to_disk folder
                continue
            inside = sorted(os.path.join(root, n) for root, _, names in os.walk(path) for n in names
                            if n.endswith((".jsonl", ".json", ".jsonl.gz", ".json.gz", ".parquet")))
            if not inside:
                raise InputError(f"{path}: no .jsonl, .jsonl.gz or .parquet files in this folder")
            files.extend(inside)
        else:
            files.append(path)
    return files


def records(path, keys):
    """(line number, {key: text}) of each record, with the bytes read so far.
    A file its reader cannot read (corrupt gzip or parquet, unreadable) is
    one line naming it, whatever the format."""
    try:
        if os.path.isdir(path):
            yield from dataset_records(path, keys)
        elif path.endswith(".parquet"):
            yield from parquet_records(path, keys)
        else:
            yield from jsonl_records(path, keys)
    except (OSError, EOFError, ValueError) as error:  # pyarrow's errors are ValueError and OSError
        raise InputError(f"{path}: cannot read it ({type(error).__name__}: {error})")


def jsonl_records(path, keys):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as raw:
        size = raw.fileobj.tell if path.endswith(".gz") else raw.tell
        for number, line in enumerate(raw, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as error:
                raise InputError(f"{path}:{number}: not a JSON object ({error})")
            yield number, texts_of(record, keys, f"{path}:{number}"), size()


def texts_of(record, keys, where):
    if not isinstance(record, dict):
        raise InputError(f"{where}: not a JSON object (a {type(record).__name__})")
    out = {}
    for key in keys:
        if key not in record:
            raise InputError(f"{where}: no '{key}' field (--json-keys {' '.join(keys)}; it has: "
                             f"{', '.join(list(record)[:8])})")
        if not isinstance(record[key], str):
            raise InputError(f"{where}: '{key}' is a {type(record[key]).__name__}, not text")
        out[key] = record[key]
    return out


def parquet_records(path, keys):
    try:
        import pyarrow.parquet
    except ImportError:
        raise InputError(f"{path}: reading parquet needs pyarrow: run scripts/setup.sh")
    table = pyarrow.parquet.ParquetFile(path)
    names = table.schema_arrow.names
    for key in keys:
        if key not in names:
            raise InputError(f"{path}: no '{key}' column (--json-keys {' '.join(keys)}; it has: "
                             f"{', '.join(names[:8])})")
    size, row = os.path.getsize(path), 0
    for group in range(table.num_row_groups):
        columns = table.read_row_group(group, columns=keys).to_pydict()
        count = len(columns[keys[0]]) if keys else 0
        for i in range(count):
            row += 1
            yield row, texts_of({k: columns[k][i] for k in keys}, keys, f"{path}: row {row}"), \
                size * (group + 1) // table.num_row_groups


def dataset_records(path, keys):
    try:
        import datasets
    except ImportError:
        raise InputError(f"{path}: a saved `datasets` dataset needs the datasets package (pip install datasets)")
    data = datasets.load_from_disk(path)
    total = max(1, len(data))
    for row, record in enumerate(data, 1):
        yield row, texts_of(record, keys, f"{path}: row {row}"), row * 1000 // total


# --- the indexed dataset --------------------------------------------------------------------


class IndexedWriter:
    """Megatron's .bin/.idx pair: tokens back to back; the index holds each
    sequence's length and byte offset and where each document starts."""

    def __init__(self, prefix, dtype):
        self.prefix, self.dtype = prefix, dtype
        self.code, self.numpy_dtype, self.size = DTYPES[dtype]
        self.bin = open(prefix + ".bin.tmp", "wb")
        self.lengths = []

    def add_document(self, ids):
        import numpy
        self.bin.write(numpy.asarray(ids, dtype=self.numpy_dtype).tobytes())
        self.lengths.append(len(ids))

    def finalize(self):
        import numpy
        self.bin.close()
        lengths = numpy.asarray(self.lengths, dtype="<i4")
        pointers = numpy.zeros(len(lengths), dtype="<i8")
        if len(lengths) > 1:
            numpy.cumsum(lengths[:-1].astype("<i8") * self.size, out=pointers[1:])
        documents = numpy.arange(len(lengths) + 1, dtype="<i8")  # one sequence a document
        with open(self.prefix + ".idx.tmp", "wb") as idx:
            idx.write(b"MMIDIDX\x00\x00")
            idx.write(struct.pack("<Q", 1))
            idx.write(struct.pack("<B", self.code))
            idx.write(struct.pack("<Q", len(lengths)))
            idx.write(struct.pack("<Q", len(documents)))
            idx.write(lengths.tobytes())
            idx.write(pointers.tobytes())
            idx.write(documents.tobytes())
        os.replace(self.prefix + ".bin.tmp", self.prefix + ".bin")
        os.replace(self.prefix + ".idx.tmp", self.prefix + ".idx")

    def abandon(self):
        self.bin.close()
        for suffix in (".bin.tmp", ".idx.tmp"):
            if os.path.exists(self.prefix + suffix):
                os.remove(self.prefix + suffix)


# --- workers and progress -------------------------------------------------------------------

_worker = {}


def start_worker(tokenizer_path, keys, eod):
    _worker.update(tokenizer=Tokenizer(tokenizer_path), keys=keys, eod=eod)


def encode_batch(batch):
    """{key: [ids of each record]} for a batch of records; an empty or
    blank text gives no ids (whatever special tokens the tokenizer adds)."""
    tokenizer, eod = _worker["tokenizer"], _worker["eod"]
    out = {}
    for key in _worker["keys"]:
        texts = [record[key] for record in batch]
        kept = [t for t in texts if t.strip()]
        encoded = iter(tokenizer.encode(kept) if kept else [])
        docs = [next(encoded) if t.strip() else [] for t in texts]
        out[key] = [ids + [eod] if ids and eod is not None else ids for ids in docs]
    return out


class Progress:
    def __init__(self, total_bytes):
        self.total, self.start, self.last = max(1, total_bytes), time.time(), 0.0
        self.tty = sys.stderr.isatty()

    def show(self, done_bytes, documents, tokens, final=False):
        now = time.time()
        if not final and now - self.last < (0.5 if self.tty else 10):
            return
        self.last = now
        share = min(1.0, done_bytes / self.total)
        elapsed = now - self.start
        eta = elapsed * (1 - share) / share if share > 0 else 0
        bar = "#" * int(share * 30)
        line = (f"preprocess: [{bar:<30}] {100 * share:5.1f}% {documents:,} documents, {tokens:,} tokens, "
                f"{elapsed:.0f}s, ETA {int(eta) // 60}m{int(eta) % 60:02d}s")
        print(("\r" + line) if self.tty else line, end="\n" if final or not self.tty else "", file=sys.stderr,
              flush=True)


def batches(files, keys, done):
    """Batches of records over every file; done[0] follows the bytes read."""
    batch, base = [], 0
    for path in files:
        size = os.path.getsize(path) if os.path.isfile(path) else 1000
        for _, texts, read in records(path, keys):
            done[0] = base + min(read, size)
            batch.append(texts)
            if len(batch) == BATCH:
                yield batch
                batch = []
        base += size
    if batch:
        yield batch


def preprocess(args):
    keys = args.json_keys
    tokenizer = Tokenizer(args.tokenizer)
    eod = tokenizer.eod() if args.append_eod else None
    files = input_files(args.input)
    dtype = "uint16" if tokenizer.vocab_size < 65500 else "int32"
    os.makedirs(os.path.dirname(os.path.abspath(args.output_prefix)), exist_ok=True)
    writers = {key: IndexedWriter(f"{args.output_prefix}_{key}_document", dtype) for key in keys}
    done = [0]
    progress = Progress(sum(os.path.getsize(f) if os.path.isfile(f) else 1000 for f in files))
    documents = tokens = empty = 0
    pool = multiprocessing.Pool(args.workers, start_worker, (args.tokenizer, keys, eod)) if args.workers > 1 else None
    if pool is None:
        start_worker(args.tokenizer, keys, eod)
    try:
        encoded = (pool.imap(encode_batch, batches(files, keys, done), chunksize=4) if pool
                   else map(encode_batch, batches(files, keys, done)))
        for result in encoded:
            for key in keys:
                for ids in result[key]:
                    if not ids:
                        empty += 1
                        continue
                    writers[key].add_document(ids)
                    documents += 1
                    tokens += len(ids)
            progress.show(done[0], documents, tokens)
        for writer in writers.values():
            writer.finalize()
    except BaseException:
        for writer in writers.values():
            writer.abandon()
        raise
    finally:
        if pool:
            pool.terminate()
    progress.show(progress.total, documents, tokens, final=True)
    print(f"preprocess: {documents:,} documents, {tokens:,} tokens ({dtype}, vocabulary {tokenizer.vocab_size:,}"
          f"{', EOD ' + str(eod) if eod is not None else ''}) from {len(files)} file(s); {empty:,} empty documents "
          f"skipped; wrote {', '.join(w.prefix + '.bin/.idx' for w in writers.values())}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", nargs="+", required=True, help="JSONL/.jsonl.gz/parquet files or folders")
    parser.add_argument("--json-keys", nargs="+", default=["text"], help="fields to tokenize (default: text)")
    parser.add_argument("--tokenizer", required=True, help="folder with tokenizer.json or tokenizer.model")
    parser.add_argument("--append-eod", action="store_true", help="end every document with the EOS token")
    parser.add_argument("--output-prefix", required=True, help="writes PREFIX_<key>_document.bin/.idx")
    parser.add_argument("--workers", type=int, default=1, help="tokenizing processes (default 1)")
    args = parser.parse_args()
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    try:
        preprocess(args)
    except InputError as error:
        print(f"preprocess: error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("preprocess: interrupted; no output written", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
