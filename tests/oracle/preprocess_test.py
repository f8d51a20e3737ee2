"""scripts/preprocess.py against megatron-core's IndexedDatasetBuilder (the
writer behind Megatron's tools/preprocess_data.py): for the same documents,
tokenized by the same tokenizer, the .bin and .idx files are byte-identical
to what Megatron's tools/preprocess_data.py has the builder write, empty
documents included (a document of no sequences). Offline: the tokenizers are
trained here (a BPE tokenizer.json with Llama's BOS template, a SentencePiece
model, a word-level vocabulary of 70,000 for int32 ids, and one declaring 100
tokens that produces id 70,000). Inputs: a folder of .jsonl and .jsonl.gz,
parquet, and a `datasets` DatasetDict's split where `datasets` is installed.
Bad input, a broken tokenizer, a full disk or an output path under a file
end with one line naming it, exit 2, and leave no output. `longtrain data`
counts the documents and tokens written, and a mixture's long share as
upsampled. Exits 77 (ctest: skipped) without megatron-core.

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


def megatron(ids, eod=None):
    """A document's ids as Megatron's Encoder.encode gives them: the EOD only after some ids."""
    return ids + [eod] if ids and eod is not None else ids


def reference(prefix, documents, dtype):
    """What tools/preprocess_data.py has the builder write: a document of no ids is no sequence."""
    builder = IndexedDatasetBuilder(prefix + ".bin", dtype=dtype)
    for ids in documents:
        builder.add_document(ids, [len(ids)] if ids else [])
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
    texts[5] = texts[-1] = ""  # empty documents: kept, as Megatron keeps them
    texts[9] = "   "
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
    eos = bpe.token_to_id("</s>")
    ids = [megatron(bpe.encode(t).ids, eos) for t in texts]  # an empty text is BOS, then EOD
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
        f.write("\n".join(t for t in texts if t.strip()))
    os.makedirs(os.path.join(out, "sp"), exist_ok=True)
    sentencepiece.SentencePieceTrainer.train(input=os.path.join(out, "sp_corpus.txt"),
                                             model_prefix=os.path.join(out, "sp", "tokenizer"), vocab_size=120,
                                             model_type="bpe", minloglevel=2)
    sp = sentencepiece.SentencePieceProcessor(model_file=os.path.join(out, "sp", "tokenizer.model"))
    run = preprocess("--input", corpus, "--tokenizer", os.path.join(out, "sp"), "--append-eod",
                     "--output-prefix", os.path.join(out, "sp_out"))
    check(run.returncode == 0, f"preprocess with sentencepiece failed: {run.stderr}")
    sp_ids = [megatron(sp.encode(t), sp.eos_id()) for t in texts]
    check(sum(not d for d in sp_ids) >= 2, "the corpus has no documents of no ids")
    check(f"{sum(not d for d in sp_ids)} of no ids" in run.stdout, run.stdout)
    reference(os.path.join(out, "sp_ref"), sp_ids, numpy.uint16)
    same_bytes(os.path.join(out, "sp_out_text_document"), os.path.join(out, "sp_ref"))
    print(f"ok: SentencePiece tokenizer.model byte-identical, {sum(not d for d in sp_ids)} empty documents kept "
          f"as Megatron keeps them (no sequence, no EOD)")

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

    # A tokenizer declaring 100 tokens that produces id 70,000 (at record 300):
    # int32, the ids before it rewritten, byte-identical to the builder's int32.
    sparse = {f"w{i}": i for i in range(99)}
    sparse.update({"[UNK]": 99, "rare": 70000})
    odd = Tokenizer(models.WordLevel(sparse, unk_token="[UNK]"))
    odd.pre_tokenizer = pre_tokenizers.Whitespace()
    os.makedirs(os.path.join(out, "sparse"), exist_ok=True)
    odd.save(os.path.join(out, "sparse", "tokenizer.json"))
    check(odd.get_vocab_size(with_added_tokens=True) == 101, "the sparse tokenizer declares another size")
    docs = [" ".join(f"w{rng.randrange(99)}" for _ in range(rng.randrange(1, 40))) for _ in range(600)]
    docs[300] += " rare"
    with open(os.path.join(out, "sparse.jsonl"), "w") as f:
        for t in docs:
            f.write(json.dumps({"text": t}) + "\n")
    run = preprocess("--input", os.path.join(out, "sparse.jsonl"), "--tokenizer", os.path.join(out, "sparse"),
                     "--output-prefix", os.path.join(out, "sparse_out"))
    check(run.returncode == 0 and "int32 although the tokenizer declares 101 tokens: it produced id 70,000"
          in run.stdout, f"preprocess with id 70,000 of 101: {run.stdout}{run.stderr}")
    reference(os.path.join(out, "sparse_ref"), [odd.encode(t).ids for t in docs], numpy.int32)
    same_bytes(os.path.join(out, "sparse_out_text_document"), os.path.join(out, "sparse_ref"))
    print("ok: id 70,000 from a tokenizer of 101 tokens writes int32, byte-identical")

    # A `datasets` DatasetDict saved with save_to_disk: --split names the split.
    try:
        import datasets
    except ImportError:
        print("skipped: a saved DatasetDict (no `datasets` package)")
    else:
        datasets.disable_progress_bars()
        datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": texts}),
                              "test": datasets.Dataset.from_dict({"text": texts[:3]})}).save_to_disk(
                                  os.path.join(out, "dict"))
        run = preprocess("--input", os.path.join(out, "dict"), "--split", "train", "--tokenizer",
                         os.path.join(out, "bpe"), "--append-eod", "--output-prefix", os.path.join(out, "dict_out"))
        check(run.returncode == 0, f"preprocess of a DatasetDict failed: {run.stderr}")
        same_bytes(os.path.join(out, "dict_out_text_document"), os.path.join(out, "bpe_ref"))
        print("ok: a saved DatasetDict's --split train byte-identical")

    # `longtrain data` counts what the files hold, and describes a recipe's mixture.
    if longtrain:
        prefix = os.path.join(out, "bpe_out_text_document")
        run = subprocess.run([longtrain, "data", prefix], capture_output=True, text=True)
        want = f"{prefix}: {len(ids)} documents, {sum(map(len, ids))} tokens"
        check(run.returncode == 0 and run.stdout.startswith(want), f"longtrain data: {run.stdout}{run.stderr}")
        sp_prefix = os.path.join(out, "sp_out_text_document")  # documents of no sequences read as empty
        run = subprocess.run([longtrain, "data", sp_prefix], capture_output=True, text=True)
        empties = sum(not d for d in sp_ids)
        check(run.returncode == 0 and f"{len(sp_ids) - empties} documents" in run.stdout
              and f"{empties} empty documents" in run.stdout, f"longtrain data {sp_prefix}: {run.stdout}{run.stderr}")
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
    for args, want in bad_inputs(out, corpus, bad) + (
        (["--input", cut], f"{cut}: cannot read it (EOFError"),
        (["--input", os.path.join(out, "corpus.parquet"), "--json-keys", "body"],
         "corpus.parquet: no 'body' column (--json-keys body; it has: text)"),
        (["--input", not_parquet], f"{not_parquet}: cannot read it ("),
        (["--input", bad], f"{bad}:3: not a JSON object"),
        (["--input", os.path.join(out, "wide.jsonl")], f"{os.path.join(out, 'wide.jsonl')}:1: no 'text' field"),
        (["--input", bad, "--tokenizer", os.path.join(out, "nowhere")], "nowhere: no tokenizer.json or tokenizer.model"),
        (["--input", os.path.join(out, "missing.jsonl")], "missing.jsonl: no such file or folder"),
    ):
        if want is None:
            continue
        full = args + ([] if "--tokenizer" in args else ["--tokenizer", os.path.join(out, "bpe")])
        full += [] if "--output-prefix" in args else ["--output-prefix", os.path.join(out, "bad_out")]
        run = preprocess(*full)
        lines = run.stderr.strip().splitlines()
        check(run.returncode == 2 and len(lines) == 1 and want in lines[0] and "Traceback" not in run.stderr,
              f"{' '.join(args)}: exit {run.returncode}, stderr {run.stderr!r}; wanted one line with {want!r}")
        check(not glob.glob(os.path.join(out, "bad_out*")), f"{' '.join(args)} left output behind")
        print(f"ok: {lines[0]}")


def bad_inputs(out, corpus, bad):
    """(flags, the words of the one line wanted) of the inputs, tokenizers and
    outputs refused; want None where this machine cannot set the case up."""
    surrogate = os.path.join(out, "surrogate.jsonl")
    with open(surrogate, "w") as f:
        f.write(json.dumps({"text": "fine"}) + "\n" + '{"text": "half a pair \\ud800 here"}\n')
    empty, blank = os.path.join(out, "empty.jsonl"), os.path.join(out, "blank.jsonl")
    with open(empty, "w") as f:
        f.write(json.dumps({"text": ""}) + "\n" + json.dumps({"text": ""}) + "\n")
    with open(blank, "w") as f:
        f.write("\n\n")
    broken = {}
    for name, content in (("tokenizer.json", '{"version": "1.0", "model": '), ("tokenizer.model", "not a model"),
                          ("tokenizer_config.json", '{"eos_token": ')):
        broken[name] = os.path.join(out, "broken_" + name.replace(".", "_"))
        os.makedirs(broken[name], exist_ok=True)
        with open(os.path.join(broken[name], name), "w") as f:
            f.write(content)
    with open(os.path.join(out, "bpe", "tokenizer.json")) as source, \
            open(os.path.join(broken["tokenizer_config.json"], "tokenizer.json"), "w") as f:
        f.write(source.read())  # a good tokenizer.json beside the broken config
    splits = os.path.join(out, "saved_dict")
    os.makedirs(os.path.join(splits, "train"), exist_ok=True)
    with open(os.path.join(splits, "dataset_dict.json"), "w") as f:
        json.dump({"splits": ["train", "test"]}, f)
    # A full disk: the .bin being written is /dev/full (the script writes PREFIX.bin.tmp, then renames it).
    full_disk = os.path.exists("/dev/full")
    if full_disk:
        os.symlink("/dev/full", os.path.join(out, "bad_out_text_document.bin.tmp"))
    return (  # the full disk first: any case that opens the output removes the link
        (["--input", corpus], "bad_out_text_document.bin: cannot write it (No space left on device); free some space"
         if full_disk else None),
        (["--input", surrogate], f"{surrogate}:2: 'text' holds a lone surrogate (\\ud800 at character 12)"),
        (["--input", corpus, "--tokenizer", broken["tokenizer.json"]],
         f"{broken['tokenizer.json']}/tokenizer.json: not a HF tokenizer.json its library can read (EOF while"),
        (["--input", corpus, "--tokenizer", broken["tokenizer.model"]],
         f"{broken['tokenizer.model']}/tokenizer.model: not a SentencePiece model its library can read ("),
        (["--input", corpus, "--tokenizer", broken["tokenizer_config.json"], "--append-eod"],
         f"{broken['tokenizer_config.json']}/tokenizer_config.json: cannot read it as JSON ("),
        (["--input", corpus, "--output-prefix", os.path.join(bad, "sub", "bad_out")],
         f"--output-prefix {os.path.join(bad, 'sub', 'bad_out')}: {bad} is a file, not a folder"),
        (["--input", corpus, "--json-keys", "text", "text"], "--json-keys names 'text' more than once"),
        (["--input", empty, "--tokenizer", os.path.join(out, "sp"), "--append-eod"],
         f"no tokens in 'text' of {empty} (2 records, all empty): nothing written"),
        (["--input", blank], f"no tokens in 'text' of {blank} (0 records, all empty)"),
        (["--input", splits], f"{splits}: a `datasets` DatasetDict with splits train, test: pass --split NAME"),
        (["--input", splits, "--split", "dev"], f"{splits}: no split 'dev' (--split; it has: train, test)"),
        (["--input", corpus, "--split", "train"], "--split train: no input is a `datasets` DatasetDict"),
    )

if __name__ == "__main__":
    main()
