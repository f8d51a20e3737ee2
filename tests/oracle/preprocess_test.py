"""scripts/preprocess.py against megatron-core's IndexedDatasetBuilder (the
writer behind Megatron's tools/preprocess_data.py): for the same documents,
tokenized by the same tokenizer, the .bin and .idx files are byte-identical.
Offline: the tokenizers are trained here (a BPE tokenizer.json with Llama's
BOS template, a SentencePiece model, and a word-level vocabulary of 70,000
for int32 ids). Inputs: a folder of .jsonl and .jsonl.gz, and parquet. Bad
input ends with one line naming it, and leaves no output. `longtrain data`
counts the documents and tokens written, and a mixture's long share as
upsampled. Exits 77 (ctest:
skipped) without megatron-core.

usage: preprocess_test.py SCRATCH_DIR [LONGTRAIN]  (with the program: `longtrain data` on the output)
"""
import glob
import gzip
import json
import os
import random
import subprocess
import sys

try:
    import numpy
    import torch
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder
except ImportError as error:
    print(f"skipped: {error}")
    sys.exit(77)
import pyarrow
import pyarrow.parquet
import sentencepiece
from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers

SCRIPT = os.path.join(os.path.dirname(__file__), "..", "..", "scripts", "preprocess.py")
WORDS = "the of key pass number long context ring attention shard gather layer token model train".split()


def text(rng):
    return " ".join(rng.choice(WORDS) + str(rng.randrange(100)) for _ in range(rng.randrange(1, 60)))


def check(condition, message):
    if not condition:
        print(f"FAIL: {message}")
        sys.exit(1)


def preprocess(*args):
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True)


def reference(prefix, documents, dtype):
    builder = IndexedDatasetBuilder(prefix + ".bin", dtype=dtype)
    for ids in documents:
        builder.add_item(torch.tensor(ids, dtype=torch.int64))
        builder.end_document()
    builder.finalize(prefix + ".idx")


def same_bytes(ours, theirs):
    for suffix in (".bin", ".idx"):
        with open(ours + suffix, "rb") as a, open(theirs + suffix, "rb") as b:
            check(a.read() == b.read(), f"{ours}{suffix} differs from megatron-core's {theirs}{suffix}")


def bpe_tokenizer(folder, corpus):
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>", "<s>", "</s>"]))
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    os.makedirs(folder, exist_ok=True)
    tok.save(os.path.join(folder, "tokenizer.json"))
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump({"eos_token": "</s>"}, f)
    return tok


def main():
    out = sys.argv[1]
    longtrain = sys.argv[2] if len(sys.argv) > 2 else None
    os.makedirs(out, exist_ok=True)
    rng = random.Random(3)
    texts = [text(rng) for _ in range(700)]
    texts[5] = ""  # an empty document: skipped
    corpus = os.path.join(out, "corpus")
    os.makedirs(corpus, exist_ok=True)
    with open(os.path.join(corpus, "a.jsonl"), "w") as f:
        for t in texts[:400]:
            f.write(json.dumps({"text": t, "id": 1}) + "\n")
        f.write("\n")  # a blank line: no record
    with gzip.open(os.path.join(corpus, "b.jsonl.gz"), "wt") as f:
        for t in texts[400:]:
            f.write(json.dumps({"text": t}) + "\n")

    # A BPE tokenizer.json (BOS from its template, EOS from tokenizer_config.json), 2 workers.
    bpe = bpe_tokenizer(os.path.join(out, "bpe"), texts)
    run = preprocess("--input", corpus, "--tokenizer", os.path.join(out, "bpe"), "--append-eod",
                     "--output-prefix", os.path.join(out, "bpe_out"), "--workers", "2")
    check(run.returncode == 0, f"preprocess failed: {run.stderr}")
    check("1 empty documents skipped" in run.stdout, run.stdout)
    eos = bpe.token_to_id("</s>")
    ids = [bpe.encode(t).ids + [eos] for t in texts if t]
    reference(os.path.join(out, "bpe_ref"), ids, numpy.uint16)
    same_bytes(os.path.join(out, "bpe_out_text_document"), os.path.join(out, "bpe_ref"))
    print(f"ok: BPE tokenizer.json, .jsonl + .jsonl.gz, 2 workers: {len(ids)} documents byte-identical (uint16)")

    # Parquet input, the same documents.
    pyarrow.parquet.write_table(pyarrow.table({"text": texts}), os.path.join(out, "corpus.parquet"), row_group_size=100)
    run = preprocess("--input", os.path.join(out, "corpus.parquet"), "--tokenizer", os.path.join(out, "bpe"),
                     "--append-eod", "--output-prefix", os.path.join(out, "parquet_out"))
    check(run.returncode == 0, f"preprocess of parquet failed: {run.stderr}")
    same_bytes(os.path.join(out, "parquet_out_text_document"), os.path.join(out, "bpe_ref"))
    print("ok: parquet input byte-identical")

    # A SentencePiece model: no special tokens added, its own EOS appended.
    with open(os.path.join(out, "sp_corpus.txt"), "w") as f:
        f.write("\n".join(t for t in texts if t))
    os.makedirs(os.path.join(out, "sp"), exist_ok=True)
    sentencepiece.SentencePieceTrainer.train(input=os.path.join(out, "sp_corpus.txt"),
                                             model_prefix=os.path.join(out, "sp", "tokenizer"), vocab_size=120,
                                             model_type="bpe", minloglevel=2)
    sp = sentencepiece.SentencePieceProcessor(model_file=os.path.join(out, "sp", "tokenizer.model"))
    run = preprocess("--input", corpus, "--tokenizer", os.path.join(out, "sp"), "--append-eod",
                     "--output-prefix", os.path.join(out, "sp_out"))
    check(run.returncode == 0, f"preprocess with sentencepiece failed: {run.stderr}")
    reference(os.path.join(out, "sp_ref"), [sp.encode(t) + [sp.eos_id()] for t in texts if t], numpy.uint16)
    same_bytes(os.path.join(out, "sp_out_text_document"), os.path.join(out, "sp_ref"))
    print("ok: SentencePiece tokenizer.model byte-identical")

    # A vocabulary of 70,000: int32 ids; without --append-eod.
    vocab = {f"w{i}": i for i in range(70000)}
    vocab["[UNK]"] = 70000
    words = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    words.pre_tokenizer = pre_tokenizers.Whitespace()
    os.makedirs(os.path.join(out, "words"), exist_ok=True)
    words.save(os.path.join(out, "words", "tokenizer.json"))
    wide = [" ".join(f"w{rng.randrange(70001)}" for _ in range(rng.randrange(1, 50))) for _ in range(200)]
    with open(os.path.join(out, "wide.jsonl"), "w") as f:
        for t in wide:
            f.write(json.dumps({"body": t}) + "\n")
    run = preprocess("--input", os.path.join(out, "wide.jsonl"), "--json-keys", "body", "--tokenizer",
                     os.path.join(out, "words"), "--output-prefix", os.path.join(out, "wide_out"))
    check(run.returncode == 0, f"preprocess with a 70,000 vocabulary failed: {run.stderr}")
    reference(os.path.join(out, "wide_ref"), [words.encode(t).ids for t in wide], numpy.int32)
    same_bytes(os.path.join(out, "wide_out_body_document"), os.path.join(out, "wide_ref"))
    print("ok: a 70,000 vocabulary writes int32, byte-identical")

    # `longtrain data` counts what the files hold, and describes a recipe's mixture.
    if longtrain:
        prefix = os.path.join(out, "bpe_out_text_document")
        run = subprocess.run([longtrain, "data", prefix], capture_output=True, text=True)
        want = f"{prefix}: {len(ids)} documents, {sum(map(len, ids))} tokens"
        check(run.returncode == 0 and run.stdout.startswith(want), f"longtrain data: {run.stdout}{run.stderr}")
        recipe = os.path.join(out, "mixture.yaml")
        with open(recipe, "w") as f:
            f.write(f"model:\n  preset: tiny\ndata:\n  source: indexed\n  mixture:\n    - {{path: {prefix}, weight: 3}}\n"
                    f"    - {{path: {os.path.join(out, 'sp_out_text_document')}, weight: 1}}\n"
                    f"  upsample_long: {{min_length: 64, share: 0.9}}\n")
        run = subprocess.run([longtrain, "data", recipe], capture_output=True, text=True)
        long_share = 100 * sum(len(d) for d in ids if len(d) >= 64) / sum(map(len, ids))
        want = f" 75.0%  {prefix}  {long_share:5.1f}% ->  90.0%"
        check(run.returncode == 0 and want in run.stdout, f"longtrain data {recipe}: {run.stdout}{run.stderr}")
        print(f"ok: longtrain data: {want.strip()}")

    # Bad input: one line naming the file and line, exit 2, no output left.
    bad = os.path.join(out, "bad.jsonl")
    with open(bad, "w") as f:
        f.write(json.dumps({"text": "fine"}) + "\n\n" + '{"text": "cut off\n')
    # The same classes in the other readers: a cut-off gzip, a parquet file
    # without the column, a file that is not parquet at all.
    cut = os.path.join(out, "cut.jsonl.gz")
    with open(os.path.join(corpus, "b.jsonl.gz"), "rb") as whole, open(cut, "wb") as f:
        f.write(whole.read()[:200])
    not_parquet = os.path.join(out, "not.parquet")
    with open(not_parquet, "w") as f:
        f.write("plain text\n")
    for args, want in (
        (["--input", cut], f"{cut}: cannot read it (EOFError"),
        (["--input", os.path.join(out, "corpus.parquet"), "--json-keys", "body"],
         "corpus.parquet: no 'body' column (--json-keys body; it has: text)"),
        (["--input", not_parquet], f"{not_parquet}: cannot read it ("),
        (["--input", bad], f"{bad}:3: not a JSON object"),
        (["--input", os.path.join(out, "wide.jsonl")], f"{os.path.join(out, 'wide.jsonl')}:1: no 'text' field"),
        (["--input", bad, "--tokenizer", os.path.join(out, "nowhere")], "nowhere: no tokenizer.json or tokenizer.model"),
        (["--input", os.path.join(out, "missing.jsonl")], "missing.jsonl: no such file or folder"),
    ):
        full = args + ([] if "--tokenizer" in args else ["--tokenizer", os.path.join(out, "bpe")])
        run = preprocess(*full, "--output-prefix", os.path.join(out, "bad_out"))
        lines = run.stderr.strip().splitlines()
        check(run.returncode == 2 and len(lines) == 1 and want in lines[0],
              f"{' '.join(args)}: exit {run.returncode}, stderr {run.stderr!r}; wanted one line with {want!r}")
        check(not glob.glob(os.path.join(out, "bad_out*")), f"{' '.join(args)} left output behind")
        print(f"ok: {lines[0]}")


if __name__ == "__main__":
    main()
