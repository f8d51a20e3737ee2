#!/usr/bin/env python3
"""Turns text into the data longtrain trains on: Megatron's indexed dataset
(P_<key>_document.bin/.idx), byte-identical to what Megatron's
tools/preprocess_data.py writes through megatron-core's IndexedDatasetBuilder
for the same token ids, so Megatron's tools and longtrain read the same files.
The flags are those of Megatron's tools/preprocess_data.py.

  scripts/preprocess.py --input data/ --tokenizer models/Llama-3.1-8B \\
      --output-prefix data/corpus --append-eod --workers 8

--input     JSONL files (.jsonl, .json, .jsonl.gz), parquet files, folders of
            them, or a `datasets` dataset saved with save_to_disk (a
            DatasetDict with --split NAME).
--tokenizer a folder (or file) with an HF tokenizer.json or a SentencePiece
            tokenizer.model. tokenizer.json encodes as transformers does (its
            own special tokens, e.g. Llama's BOS); SentencePiece adds none,
            as Megatron's SentencePieceTokenizer.

Each record is one document (one sequence), document i being record i. As
in Megatron, a record that encodes to no ids stays a document of no
sequences, with no EOD. Ids are uint16 below a vocabulary of 65,500 and
int32 above (Megatron's choice), and int32 too when the tokenizer produces
an id above 65,535 although it declares fewer tokens. A bad input, a broken
tokenizer or an output that cannot be written ends the run with one line
naming the file (and line), and nothing is left half-written (outputs
appear by rename).
"""
import argparse
import contextlib
import errno
import gzip
import importlib
import json
import multiprocessing
import os
import struct
import sys
import time

BATCH = 256  # records per task handed to a worker
# megatron-core's dtype code, numpy type, bytes per id and largest id of each token dtype
DTYPES = {"uint16": (8, "<u2", 2, 2**16 - 1), "int32": (4, "<i4", 4, 2**31 - 1)}
EOD_NAMES = ("</s>", "<|endoftext|>", "<|end_of_text|>", "<eos>", "<|eot_id|>")


class InputError(Exception):
    """A problem the user fixes in the input, the tokenizer, the output or the
    flags: main prints it as one line and exits 2."""


def one_line(error):
    return " ".join(str(error).split())


def need(module, purpose):
    try:
        return importlib.import_module(module)
    except ImportError:
        raise InputError(f"{purpose} needs the `{module}` package: run scripts/setup.sh (or pip install {module})")


# --- tokenizers -----------------------------------------------------------------------------


class Tokenizer:
    """An HF tokenizer.json or a SentencePiece model, found in a folder or given as a file."""

    def __init__(self, path):
        candidates = [path] if os.path.isfile(path) else [os.path.join(path, n)
                                                           for n in ("tokenizer.json", "tokenizer.model")]
        found = [c for c in candidates if os.path.isfile(c)]
        if not found:
            raise InputError(f"{path}: no tokenizer.json or tokenizer.model there: pass --tokenizer the model folder")
        self.file = found[0]
        self.hf = self.sp = None
        if self.file.endswith(".json"):
            tokenizers = need("tokenizers", "a tokenizer.json")
            self.hf = self._load(lambda: tokenizers.Tokenizer.from_file(self.file), "HF tokenizer.json")
            self.vocab_size = self.hf.get_vocab_size(with_added_tokens=True)
        else:
            sentencepiece = need("sentencepiece", "a tokenizer.model")
            self.sp = self._load(lambda: sentencepiece.SentencePieceProcessor(model_file=self.file),
                                 "SentencePiece model")
            self.vocab_size = self.sp.get_piece_size()

    def _load(self, load, kind):
        try:
            return load()
        except Exception as error:  # the libraries raise bare Exception (tokenizers) or RuntimeError/OSError
            raise InputError(f"{self.file}: not a {kind} its library can read ({one_line(error)})")

    def eod(self):
        """The end-of-document id: the model's eos token."""
        if self.sp is not None:
            if self.sp.eos_id() >= 0:
                return self.sp.eos_id()
        else:
            names = [self.configured_eos(), *EOD_NAMES]
            for name in names:
                if name and self.hf.token_to_id(name) is not None:
                    return self.hf.token_to_id(name)
        raise InputError(f"{self.file}: --append-eod needs an end-of-document token and this tokenizer names none "
                         f"(looked for tokenizer_config.json's eos_token and {', '.join(EOD_NAMES)})")

    def configured_eos(self):
        """tokenizer_config.json's eos_token beside tokenizer.json, if there is one."""
        config = os.path.join(os.path.dirname(self.file), "tokenizer_config.json")
        if not os.path.isfile(config):
            return None
        try:
            with open(config, "rb") as f:
                settings = json.load(f)
        except (OSError, ValueError) as error:
            raise InputError(f"{config}: cannot read it as JSON ({one_line(error)})")
        eos = settings.get("eos_token") if isinstance(settings, dict) else None
        eos = eos.get("content") if isinstance(eos, dict) else eos
        if eos is not None and not isinstance(eos, str):
            raise InputError(f"{config}: eos_token is a {type(eos).__name__}, not a token's text")
        return eos

    def encode(self, texts):
        if self.sp is not None:
            return self.sp.encode(texts)
        return [e.ids for e in self.hf.encode_batch(texts)]


# --- inputs ---------------------------------------------------------------------------------


def input_files(paths, split):
    """Every input file, folders expanded in name order; a DatasetDict becomes its split's folder."""
    files, dataset_dicts = [], 0
    for path in paths:
        if not os.path.exists(path):
            raise InputError(f"{path}: no such file or folder")
        if os.path.isfile(os.path.join(path, "dataset_dict.json")):
            files.append(split_folder(path, split))
            dataset_dicts += 1
        elif os.path.isfile(os.path.join(path, "dataset_info.json")):
            files.append(path)  # a Dataset saved with save_to_disk
        elif os.path.isdir(path):
            inside = sorted(os.path.join(root, n) for root, _, names in os.walk(path) for n in names
                            if n.endswith((".jsonl", ".json", ".jsonl.gz", ".json.gz", ".parquet")))
            if not inside:
                raise InputError(f"{path}: no .jsonl, .jsonl.gz or .parquet files in this folder")
            files.extend(inside)
        else:
            files.append(path)
    if split is not None and not dataset_dicts:
        raise InputError(f"--split {split}: no input is a `datasets` DatasetDict (a save_to_disk folder of splits)")
    return files


def split_folder(path, split):
    """The folder of one split of a DatasetDict saved with save_to_disk."""
    try:
        with open(os.path.join(path, "dataset_dict.json"), "rb") as f:
            splits = [str(s) for s in json.load(f)["splits"]]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise InputError(f"{os.path.join(path, 'dataset_dict.json')}: cannot read its splits ({one_line(error)})")
    if split is None:
        raise InputError(f"{path}: a `datasets` DatasetDict with splits {', '.join(splits)}: "
                         f"pass --split NAME to choose one")
    if split not in splits:
        raise InputError(f"{path}: no split '{split}' (--split; it has: {', '.join(splits)})")
    return os.path.join(path, split)


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
        raise InputError(f"{path}: cannot read it ({type(error).__name__}: {one_line(error)})")


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
        text = record[key]
        if not isinstance(text, str):
            raise InputError(f"{where}: '{key}' is a {type(text).__name__}, not text")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as error:  # a lone surrogate, e.g. "\ud800" escaped in the JSON
            raise InputError(f"{where}: '{key}' holds a lone surrogate (\\u{ord(text[error.start]):04x} at character "
                             f"{error.start}), which is not text a tokenizer can encode: fix or drop this record")
        out[key] = text
    return out


def parquet_records(path, keys):
    parquet = need("pyarrow.parquet", f"{path}: reading parquet")
    table = parquet.ParquetFile(path)
    names = table.schema_arrow.names
    for key in keys:
        if key not in names:
            raise InputError(f"{path}: no '{key}' column (--json-keys {' '.join(keys)}; it has: "
                             f"{', '.join(names[:8])})")
    size, row = os.path.getsize(path), 0
    for group in range(table.num_row_groups):
        columns = table.read_row_group(group, columns=keys).to_pydict()
        for i in range(len(columns[keys[0]])):
            row += 1
            yield row, texts_of({k: columns[k][i] for k in keys}, keys, f"{path}: row {row}"), \
                size * (group + 1) // table.num_row_groups


def dataset_records(path, keys):
    datasets = need("datasets", f"{path}: a saved `datasets` dataset")
    data = datasets.load_from_disk(path)
    total = max(1, len(data))
    for row, record in enumerate(data, 1):
        yield row, texts_of(record, keys, f"{path}: row {row}"), row * 1000 // total


# --- the indexed dataset --------------------------------------------------------------------


def output_folder(prefix):
    """Makes the folder --output-prefix writes into; one line when a file is in its way."""
    folder = os.path.dirname(prefix) or "."
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as error:
        blocker = folder
        while blocker and not os.path.exists(blocker):
            blocker = os.path.dirname(blocker)
        if blocker and not os.path.isdir(blocker):
            raise InputError(f"--output-prefix {prefix}: {blocker} is a file, not a folder: choose another prefix")
        raise InputError(f"--output-prefix {prefix}: cannot make the folder {folder} ({error.strerror or error})")


@contextlib.contextmanager
def writing(path):
    """An OSError while writing path (a full disk, no permission) as one line naming it."""
    try:
        yield
    except OSError as error:
        full = error.errno in (errno.ENOSPC, errno.EDQUOT)
        raise InputError(f"{path}: cannot write it ({error.strerror or error})"
                         + ("; free some space or choose another --output-prefix" if full else ""))


class IndexedWriter:
    """Megatron's .bin/.idx pair as IndexedDatasetBuilder.add_document writes it:
    tokens back to back; the index holds each sequence's length and byte
    offset and, per document, the sequence it ends at. A document here is one
    sequence, or none when it has no ids. Written as PATH.tmp, renamed at the end."""

    def __init__(self, prefix, dtype):
        self.numpy = need("numpy", "writing the dataset")
        self.prefix, self.dtype = prefix, dtype
        self.lengths, self.ends = [], [0]  # sequence lengths; the document index
        self.tokens = self.widened = 0  # widened: the id that made uint16 int32
        with writing(prefix + ".bin"):
            self.bin = open(prefix + ".bin.tmp", "wb")

    def add_document(self, ids):
        ids = self.numpy.asarray(ids, dtype=self.numpy.int64)
        if ids.size:
            top = int(ids.max())
            if top > DTYPES[self.dtype][3]:
                self.widen(top)
            with writing(self.prefix + ".bin"):
                self.bin.write(ids.astype(DTYPES[self.dtype][1]).tobytes())
            self.lengths.append(ids.size)
            self.tokens += ids.size
        self.ends.append(len(self.lengths))

    def widen(self, top):
        """An id above uint16's: the ids so far rewritten as int32, the rest written so."""
        if self.dtype != "uint16":
            raise InputError(f"the tokenizer produced id {top}, which does not fit Megatron's int32 ids")
        narrow, wide = self.prefix + ".bin.tmp", self.prefix + ".bin.wide.tmp"
        with writing(self.prefix + ".bin"):
            self.bin.close()
            with open(narrow, "rb") as source, open(wide, "wb") as target:
                for chunk in iter(lambda: source.read(1 << 24), b""):
                    target.write(self.numpy.frombuffer(chunk, "<u2").astype("<i4").tobytes())
            os.replace(wide, narrow)
            self.bin = open(narrow, "ab")
        self.dtype, self.widened = "int32", top

    def finalize(self):
        code, _, size, _ = DTYPES[self.dtype]
        lengths = self.numpy.asarray(self.lengths, dtype="<i4")
        pointers = self.numpy.zeros(len(lengths), dtype="<i8")
        if len(lengths) > 1:
            self.numpy.cumsum(lengths[:-1].astype("<i8") * size, out=pointers[1:])
        ends = self.numpy.asarray(self.ends, dtype="<i8")
        with writing(self.prefix + ".bin"):
            self.bin.close()
        with writing(self.prefix + ".idx"), open(self.prefix + ".idx.tmp", "wb") as idx:
            idx.write(b"MMIDIDX\x00\x00" + struct.pack("<QBQQ", 1, code, len(lengths), len(ends)))
            idx.write(lengths.tobytes() + pointers.tobytes() + ends.tobytes())
        with writing(self.prefix + ".bin"):
            os.replace(self.prefix + ".bin.tmp", self.prefix + ".bin")
            os.replace(self.prefix + ".idx.tmp", self.prefix + ".idx")

    def abandon(self):
        with contextlib.suppress(OSError):  # a full disk fails the close's flush too
            self.bin.close()
        for suffix in (".bin.tmp", ".bin.wide.tmp", ".idx.tmp"):
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.prefix + suffix)


# --- workers and progress -------------------------------------------------------------------

_worker = {}


def start_worker(tokenizer_path, keys, eod):
    _worker.update(tokenizer=Tokenizer(tokenizer_path), keys=keys, eod=eod)


def encode_batch(batch):
    """{key: [ids of each record]} for a batch of records, as Megatron's
    Encoder.encode: the EOD only after a document of some ids."""
    tokenizer, eod = _worker["tokenizer"], _worker["eod"]
    out = {}
    for key in _worker["keys"]:
        try:
            docs = tokenizer.encode([record[key] for record in batch])
        except Exception as error:
            raise InputError(f"{tokenizer.file}: the tokenizer failed ({type(error).__name__}: {one_line(error)})")
        out[key] = [list(ids) + [eod] if ids and eod is not None else list(ids) for ids in docs]
    return out


class Progress:
    def __init__(self, total_bytes):
        self.total, self.start = max(1, total_bytes), time.time()
        self.last = self.start  # the first line after a while: a quick refusal stays one line
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


def check_keys(keys):
    twice = sorted({key for key in keys if keys.count(key) > 1})
    if twice:
        raise InputError(f"--json-keys names {', '.join(repr(k) for k in twice)} more than once: "
                         f"each key is one output dataset, name it once")


def check_tokens(writers, inputs):
    for key, writer in writers.items():
        if not writer.tokens:
            raise InputError(f"no tokens in '{key}' of {', '.join(inputs)} ({len(writer.ends) - 1:,} records, "
                             f"all empty): nothing written")


def write_all(encoded, writers, keys, done, progress):
    documents = tokens = empty = 0
    for result in encoded:
        for key in keys:
            for ids in result[key]:
                writers[key].add_document(ids)
                documents += 1
                empty += not ids
                tokens += len(ids)
        progress.show(done[0], documents, tokens)
    return documents, tokens, empty


def preprocess(args):
    keys = args.json_keys
    check_keys(keys)
    tokenizer = Tokenizer(args.tokenizer)
    eod = tokenizer.eod() if args.append_eod else None
    files = input_files(args.input, args.split)
    dtype = "uint16" if tokenizer.vocab_size < 65500 else "int32"
    output_folder(args.output_prefix)
    done = [0]
    progress = Progress(sum(os.path.getsize(f) if os.path.isfile(f) else 1000 for f in files))
    writers = {}
    pool = None
    try:
        for key in keys:
            writers[key] = IndexedWriter(f"{args.output_prefix}_{key}_document", dtype)
        if args.workers > 1:
            pool = multiprocessing.Pool(args.workers, start_worker, (args.tokenizer, keys, eod))
            encoded = pool.imap(encode_batch, batches(files, keys, done), chunksize=4)
        else:
            start_worker(args.tokenizer, keys, eod)
            encoded = map(encode_batch, batches(files, keys, done))
        documents, tokens, empty = write_all(encoded, writers, keys, done, progress)
        check_tokens(writers, args.input)
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
    print(f"preprocess: {documents:,} documents ({empty:,} of no ids, kept as Megatron keeps them), {tokens:,} tokens "
          f"(vocabulary {tokenizer.vocab_size:,}{', EOD ' + str(eod) if eod is not None else ''}) from "
          f"{len(files)} file(s); wrote {', '.join(f'{w.prefix}.bin/.idx ({w.dtype})' for w in writers.values())}")
    for writer in writers.values():
        if writer.widened:
            print(f"preprocess: {writer.prefix}: int32 although the tokenizer declares {tokenizer.vocab_size:,} "
                  f"tokens: it produced id {writer.widened:,}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", nargs="+", required=True, help="JSONL/.jsonl.gz/parquet files or folders")
    parser.add_argument("--json-keys", nargs="+", default=["text"], help="fields to tokenize (default: text)")
    parser.add_argument("--split", help="the split to read of a `datasets` DatasetDict saved with save_to_disk")
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
