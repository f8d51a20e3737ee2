#!/usr/bin/env python3
"""Draws a run's figures into its run directory (PNG, with matplotlib):

  loss.png      training loss against step and against tokens, smoothed
                (the raw loss faint behind); other runs given overlaid
  training.png  learning rate, gradient norm and tokens/s against step
  eval.png      the last evaluation's loss by position in the sequence
  passkey.png   passkey exact match by length x depth of the key (the
                newest evaluation of each length), as a heatmap

usage: scripts/plot.py RUN_DIR [RUN_DIR ...] [--smooth 0.6]

Reads run_dir/metrics.jsonl, run_dir/eval.jsonl and run_dir/config.yaml as
longtrain writes them; a figure whose data a run lacks is skipped, saying so.
"""
import argparse
import json
import os
import re
import sys


def fail(message):
    print(f"plot: error: {message}", file=sys.stderr)
    sys.exit(2)


def read_jsonl(path):
    records = []
    if not os.path.isfile(path):
        return records
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except ValueError as error:
                fail(f"{path}:{number}: not a JSON line ({error})")
    return records


class Run:
    def __init__(self, path):
        if not os.path.isdir(path):
            fail(f"{path}: no such run directory")
        self.path = path
        self.name = os.path.basename(os.path.normpath(path))
        metrics = read_jsonl(os.path.join(path, "metrics.jsonl"))
        if not metrics:
            fail(f"{path}: no metrics.jsonl with steps: is this a longtrain run_dir?")
        self.steps = [m for m in metrics if "loss" in m and "lr" in m]
        self.evals = read_jsonl(os.path.join(path, "eval.jsonl"))
        self.batch_tokens = batch_tokens(os.path.join(path, "config.yaml"))


def batch_tokens(config):
    """train.global_batch_tokens from the resolved config (an integer there)."""
    if not os.path.isfile(config):
        return None
    with open(config) as f:
        found = re.search(r"^\s*global_batch_tokens:\s*(\d+)\s*$", f.read(), re.M)
    return int(found.group(1)) if found else None


def smoothed(values, weight):
    """TensorBoard's smoothing: an exponential moving average, debiased."""
    out, last, scale = [], 0.0, 0.0
    for v in values:
        if v is None or v != v:  # a skipped step
            out.append(out[-1] if out else float("nan"))
            continue
        last = weight * last + (1 - weight) * v
        scale = weight * scale + (1 - weight)
        out.append(last / scale)
    return out


def plot_loss(plt, runs, target, weight):
    has_tokens = all(r.batch_tokens for r in runs)
    fig, axes = plt.subplots(1, 2 if has_tokens else 1, figsize=(12 if has_tokens else 6.5, 4.2), squeeze=False)
    for i, run in enumerate(runs):
        color = f"C{i}"
        steps = [m["step"] for m in run.steps]
        loss = [m["loss"] for m in run.steps]
        xs = [steps] + ([[s * run.batch_tokens for s in steps]] if has_tokens else [])
        for ax, x in zip(axes[0], xs):
            ax.plot(x, loss, color=color, alpha=0.25, linewidth=0.8)
            ax.plot(x, smoothed(loss, weight), color=color, linewidth=1.6, label=run.name)
    axes[0][0].set_xlabel("step")
    if has_tokens:
        axes[0][1].set_xlabel("tokens")
    for ax in axes[0]:
        ax.set_ylabel("training loss")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"training loss (smoothed {weight})")
    save(fig, plt, target, "loss.png")


def plot_training(plt, run):
    steps = [m["step"] for m in run.steps]
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
    for ax, key, label in zip(axes, ("lr", "grad_norm", "tokens_per_s"),
                              ("learning rate", "gradient norm (before clipping)", "tokens/s")):
        ax.plot(steps, [m.get(key) for m in run.steps], color="C0")
        ax.set_xlabel("step")
        ax.set_title(label)
        ax.grid(alpha=0.3)
    save(fig, plt, run, "training.png")


def plot_eval(plt, run):
    with_loss = [e for e in run.evals if e.get("loss", {}).get("by_position")]
    if not with_loss:
        return skipped(run, "eval.png", "no evaluation with a loss by position in eval.jsonl")
    last = with_loss[-1]
    buckets = last["loss"]["by_position"]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.plot([i + 1 for i in range(len(buckets))], [b if b is not None else float("nan") for b in buckets],
            marker="o")
    ax.set_xlabel(f"position bucket (1 to {len(buckets)}, start to end of the sequence)")
    ax.set_ylabel("held-out loss")
    ax.set_title(f"loss by position, step {last.get('step', '?')}: mean {last['loss']['loss']:.4f}")
    ax.grid(alpha=0.3)
    save(fig, plt, run, "eval.png")


def plot_passkey(plt, run):
    newest = {}
    for e in run.evals:
        for p in e.get("passkey", []):
            newest[p["length"]] = (p, e.get("step"))
    if not newest:
        return skipped(run, "passkey.png", "no passkey evaluation in eval.jsonl")
    lengths = sorted(newest)
    depths = max(len(newest[n][0].get("exact_by_depth") or [newest[n][0]["exact"]]) for n in lengths)
    table = [[float("nan")] * len(lengths) for _ in range(depths)]
    for j, n in enumerate(lengths):
        row = newest[n][0].get("exact_by_depth") or [newest[n][0]["exact"]]
        for d, value in enumerate(row):
            table[d][j] = 100 * value
    fig, ax = plt.subplots(figsize=(1.2 * len(lengths) + 3, 0.6 * depths + 2.5))
    image = ax.imshow(table, cmap="RdYlGn", vmin=0, vmax=100, aspect="auto", origin="lower")
    for d in range(depths):
        for j in range(len(lengths)):
            if table[d][j] == table[d][j]:
                ax.text(j, d, f"{table[d][j]:.0f}", ha="center", va="center", fontsize=9)
    ax.set_xticks(range(len(lengths)), [str(n) for n in lengths])
    ax.set_yticks(range(depths), [f"{(d + 0.5) / depths:.0%}" for d in range(depths)])
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel("depth of the key")
    ax.set_title("passkey exact match (%)")
    fig.colorbar(image, ax=ax)
    save(fig, plt, run, "passkey.png")


def save(fig, plt, run, name):
    path = os.path.join(run.path, name)
    fig.tight_layout()
    fig.savefig(path + ".tmp.png", dpi=110)
    os.replace(path + ".tmp.png", path)
    plt.close(fig)
    print(f"plot: wrote {path}")


def skipped(run, name, why):
    print(f"plot: {run.path}: no {name}: {why}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR")
    parser.add_argument("--smooth", type=float, default=0.6,
                        help="EMA weight of the loss curves (0: none; default 0.6, TensorBoard's)")
    args = parser.parse_args()
    if not 0 <= args.smooth < 1:
        fail(f"--smooth {args.smooth}: must be in [0, 1)")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        fail("matplotlib is missing: run scripts/setup.sh")
    runs = [Run(p) for p in args.runs]
    for run in runs:
        plot_loss(plt, [run] + [r for r in runs if r is not run], run, args.smooth)
        plot_training(plt, run)
        plot_eval(plt, run)
        plot_passkey(plt, run)


if __name__ == "__main__":
    main()
