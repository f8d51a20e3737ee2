"""Reads a run's TensorBoard event files with the tensorboard package, as
TensorBoard itself does, and checks that they hold every figure of the run's
metrics.jsonl at its step, in order (as float32: TensorBoard's scalars are),
and that every record's CRCs check out.

Usage: tensorboard_read.py RUN_DIR
"""
import glob
import json
import math
import struct
import sys

from tensorboard.backend.event_processing import event_accumulator
from tensorboard.compat.tensorflow_stub import errors
from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import PyRecordReader_New


def as_float32(value):
    return struct.unpack("<f", struct.pack("<f", value))[0]


def same(a, b):
    return a == b or (math.isnan(a) and math.isnan(b))


def expected_scalars(run):
    """metrics.jsonl's numbers (not flags) by name: [(step, value)] in file order."""
    scalars = {}
    with open(f"{run}/metrics.jsonl") as lines:
        for line in lines:
            record = json.loads(line)
            for name, value in record.items():
                if name != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                    scalars.setdefault(name, []).append((record.get("step", 0), as_float32(value)))
    return scalars


def check_framing(path):
    """Every record's length and data CRC (the reader raises DataLossError)."""
    reader = PyRecordReader_New(path)
    records = 0
    while True:
        try:
            reader.GetNext()
        except errors.OutOfRangeError:
            return records
        records += 1


def main(run):
    files = sorted(glob.glob(f"{run}/tb/events.out.tfevents.*"))
    assert files, f"{run}/tb holds no event file"
    records = sum(check_framing(path) for path in files)

    expected = expected_scalars(run)
    for name in ("loss", "lr", "grad_norm", "tokens_per_s", "eval_loss", "passkey_exact"):
        assert name in expected, f"metrics.jsonl lacks {name}: the run does not test what it should"
    accumulator = event_accumulator.EventAccumulator(
        f"{run}/tb", size_guidance={event_accumulator.SCALARS: 0}, purge_orphaned_data=False)
    accumulator.Reload()
    tags = sorted(accumulator.Tags()["scalars"])
    assert tags == sorted(expected), f"tags {tags} != metrics.jsonl's {sorted(expected)}"
    for name, want in expected.items():
        got = [(event.step, event.value) for event in accumulator.Scalars(name)]
        assert len(got) == len(want) and all(gs == ws and same(gv, wv) for (gs, gv), (ws, wv) in zip(got, want)), \
            f"{name}: TensorBoard {got} != metrics.jsonl {want}"
    points = sum(len(v) for v in expected.values())
    print(f"tensorboard: {len(files)} event files, {records} records; {len(tags)} tags, {points} points "
          f"equal to metrics.jsonl")


if __name__ == "__main__":
    main(sys.argv[1])
