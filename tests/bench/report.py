"""Combines benchmark JSON lines (stdin) into a results file with ratios
against the baselines of the same invocation, and prints a Markdown table.
--attention: the lines are attention-kernel timings (lt_bench_attention);
--data-parallel: the lines are lt_bench_dp's (overlap, communicator overhead);
--sequence-parallel: the lines are lt_bench_sp's (one sequence over N ranks);
--longest: lt_bench_sp's longest-sequence search;
--model-parallel: lt_bench_mp's (pipeline bubble, tensor-parallel bytes);
--memory: lt_bench_mem's (longest sequence under a cap, each feature's cost);
--host-optimizer: lt_bench_opt's (fused AdamW, overlapped chunk update);
--moe: lt_bench_moe's (MoE vs dense step, load under each balance scope);
--hf: lt_bench_hf's (HF checkpoint load per rank, tokens/s by curriculum stage);
--adaptive-sp: lt_bench_asp's (planned step time, adaptive vs the best static layout; training on CPU ranks);
--zero: lt_bench_zero's (model state per rank by ZeRO level against the plan, with and without offloaded chunks;
ZeRO-3's step against ZeRO-1's)."""
import argparse
import datetime
import json
import math
import platform
import sys


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--command", required=True)
    p.add_argument("--out", required=True)
    reports = {"attention": attention_report, "data_parallel": data_parallel_report,
               "sequence_parallel": sequence_parallel_report, "longest": longest_report,
               "model_parallel": model_parallel_report, "memory": memory_report,
               "host_optimizer": host_optimizer_report, "moe": moe_report, "hf": hf_report,
               "adaptive_sp": adaptive_sp_report, "gpu": gpu_report, "resume": resume_report,
               "zero": zero_report}
    for flag in reports:
        p.add_argument("--" + flag.replace("_", "-"), action="store_true")
    a = p.parse_args()
    runs = [json.loads(line) for line in sys.stdin if line.strip()]
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.machine())
    for flag, report in reports.items():
        if getattr(a, flag):
            report(a, runs, cpu)
            return
    train_report(a, runs, cpu)


# The training comparison: every arm (longtrain and HF, fp32 and bf16) ran
# several times, interleaved; the best run of each arm at each length is
# kept, and the ratios the issue asks of them are computed from those.
def train_report(a, runs, cpu):
    best = {}
    for run in runs:
        key = (run["seq"], run["impl"])
        if "tokens_per_s" in run and (key not in best or run["tokens_per_s"] > best[key]["tokens_per_s"]):
            best[key] = run
    ratios = [("longtrain-bf16", "hf-bf16", "tokens_per_s"), ("longtrain-bf16", "longtrain-fp32", "tokens_per_s"),
              ("longtrain-fp32", "hf-fp32", "tokens_per_s"), ("longtrain-bf16", "hf-bf16", "peak_memory_bytes")]
    rows = []
    for seq in sorted({s for s, _ in best}):
        arms = {impl: r for (s, impl), r in best.items() if s == seq}
        row = {"seq": seq, "arms": arms}
        for ours, theirs, what in ratios:
            if ours in arms and theirs in arms:
                row[f"{ours}/{theirs} {what}"] = arms[ours][what] / arms[theirs][what]
        rows.append(row)
    result = {"command": a.command, "date": datetime.date.today().isoformat(), "cpu": cpu,
              "threads": runs[0].get("threads"), "runs": runs, "best": rows}
    with open(a.out, "w") as f:
        json.dump(result, f, indent=2)
    gib = lambda b: f"{b / 2**30:.2f} GiB"
    impls = ["hf-fp32", "hf-bf16", "longtrain-fp32", "longtrain-bf16"]
    print("| seq | " + " | ".join(f"{i} tok/s (peak mem)" for i in impls) + " | longtrain bf16 MFU | "
          + " | ".join(f"{o} / {t} {w.split('_')[0]}" for o, t, w in ratios) + " |")
    print("|" + "---|" * (2 + len(impls) + len(ratios)))
    for r in rows:
        cells = [f"{r['arms'][i]['tokens_per_s']:.0f} ({gib(r['arms'][i]['peak_memory_bytes'])})" if i in r["arms"]
                 else "-" for i in impls]
        mfu = r["arms"].get("longtrain-bf16", {}).get("mfu")
        cells.append(f"{100 * mfu:.1f}%" if mfu else "-")
        cells += [f"{r[f'{o}/{t} {w}']:.2f}x" if f"{o}/{t} {w}" in r else "-" for o, t, w in ratios]
        print(f"| {r['seq']} | " + " | ".join(cells) + " |")


# scripts/gpu_check.sh: bf16 throughput of the 8B shape and the longest
# sequence of the full model, as measured (failed runs say so).
# Dense bf16 tensor-core rates from NVIDIA's datasheets (FLOP/s, without sparsity).
DATASHEET_BF16 = {"H100 PCIe": 756e12, "H100 NVL": 835e12, "H100": 989e12, "H200": 989e12, "A100": 312e12}


def gpu_name():
    import subprocess
    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                              text=True, timeout=10).stdout.splitlines()[0].strip()
    except (OSError, IndexError, subprocess.SubprocessError):
        return "unknown"


def gpu_report(a, runs, cpu):
    trained = [r for r in runs if "tokens_per_s" in r]
    offloaded = [r for r in trained if r.get("offload") and r["seq"] >= LONGEST_FROM]
    longest = max(offloaded, key=lambda r: r["seq"], default=None)
    name = gpu_name()
    datasheet = next((rate for key, rate in DATASHEET_BF16.items() if key in name), None)
    for r in trained:  # MFU against the measured 8192^3 product, and against the datasheet
        r["mfu_datasheet"] = r["mfu"] * r["peak_gflops"] * 1e9 / datasheet if datasheet else None
    offload_check = same_losses(trained, OFFLOAD_LOSS_TOLERANCE)
    with open(a.out, "w") as f:
        json.dump({"command": a.command, "date": datetime.date.today().isoformat(), "gpu": name,
                   "datasheet_bf16_flops": datasheet, "runs": runs, "offload_against_resident": offload_check,
                   "longest_offloaded": longest and {"seq": longest["seq"], "layers": longest["layers"]}}, f, indent=2)
    percent = lambda x: "-" if x is None else f"{100 * x:.1f}%"
    table(["seq", "layers", "offload", "documents", "tok/s", "MFU (measured peak)", "MFU (datasheet)", "peak memory"],
          [[r["seq"], r["layers"], r["offload"], r.get("documents", 1), f"{r['tokens_per_s']:.0f}",
            percent(r["mfu"]), percent(r["mfu_datasheet"]), f"{r['peak_memory_bytes'] / 2**30:.1f} GiB"]
           for r in trained])
    for r in runs:
        if "error" in r or "skipped" in r:
            print("failed:" if "error" in r else "skipped:", json.dumps(r))
        elif r.get("bench") == "step":
            print(f"ZeRO-{r['zero']} step on {r['ranks']} GPUs: {r['step_s']:.3f} s, {r['over_zero1']:.2f}x ZeRO-1's, "
                  f"waiting {r['gather_wait_s']:.3f} s for gathers")
        elif "plan" in r:
            print(f"planned at {r['seq']} tokens: {r['layers']} layers, host {r['host_state_bytes'] / 2**30:.1f} GiB "
                  f"of state + {r['host_activation_bytes'] / 2**30:.1f} GiB of activations within "
                  f"{r['host_limit_bytes'] / 2**30:.1f} GiB, device {r['device_bytes'] / 2**30:.1f} GiB estimated"
                  if r.get("layers") else f"planned at {r['seq']} tokens: no layer fits: {json.dumps(r)}")
    if offload_check:
        worst = offload_check["max_relative_difference"]
        print(f"offloaded against resident ({offload_check['layers']} layers at {offload_check['seq']}): losses "
              f"within {math.inf if worst is None else worst:.2e} of each other, "
              f"{'equal' if offload_check['equal'] else 'NOT EQUAL'} at {OFFLOAD_LOSS_TOLERANCE}")
    else:
        print("offloaded against resident: not compared (a run of the pair failed or did not run)")
    print("longest sequence with the state offloaded:",
          f"{longest['seq']} tokens, {longest['layers']} of the 8B model's 32 layers" if longest else None)


# bf16 with every layer recomputed and the MLP and loss tiled, against the
# same stack resident and untiled: as CudaBf16.OffloadedChunksTrainAsResidentWeights.
OFFLOAD_LOSS_TOLERANCE = 5e-3
LONGEST_FROM = 65536  # the longest-sequence search's first length


def relative_difference(x, y):
    """|x - y| / |y|; infinite where either is not a finite number (JSON null for NaN) or y is 0."""
    finite = lambda v: isinstance(v, (int, float)) and math.isfinite(v)
    return abs(x - y) / abs(y) if finite(x) and finite(y) and y != 0 else math.inf


def same_losses(trained, tolerance):
    """The losses of the first offloaded run against the resident run of its shape (no documents)."""
    plain = lambda r: r.get("documents", 1) == 1 and "losses" in r
    for off in (r for r in trained if r["offload"] and plain(r)):
        on = next((r for r in trained if not r["offload"] and plain(r)
                   and (r["seq"], r["layers"]) == (off["seq"], off["layers"])), None)
        if on:
            worst = (max(map(relative_difference, off["losses"], on["losses"]))
                     if len(off["losses"]) == len(on["losses"]) else math.inf)
            return {"seq": off["seq"], "layers": off["layers"], "resident_losses": on["losses"],
                    "offloaded_losses": off["losses"],
                    "max_relative_difference": worst if math.isfinite(worst) else None, "equal": worst <= tolerance}
    return None


def table(headers, rows):
    print("| " + " | ".join(headers) + " |")
    print("|" + "---|" * len(headers))
    for row in rows:
        print("| " + " | ".join(str(cell) for cell in row) + " |")


def save_runs(a, runs, cpu):
    with open(a.out, "w") as f:
        json.dump({"command": a.command, "date": datetime.date.today().isoformat(), "cpu": cpu, "runs": runs}, f, indent=2)


def longest_report(a, runs, cpu):
    save_runs(a, runs, cpu)
    table(["ranks", "layout", "longest sequence", "its step's working memory per rank"],
          [[r["ranks"], r["layout"], r["longest_seq"], f"{r['step_memory_bytes'] / 2**20:.0f} MiB"] for r in runs])


def attention_report(a, runs, cpu):
    save_runs(a, runs, cpu)
    table(["seq", "documents", "flash fwd+bwd", "blockwise fwd+bwd", "flash speedup"],
          [[r["seq"], "4 packed" if r["documents"] else "one", f"{r['flash_s'] * 1e3:.0f} ms",
            f"{r['blockwise_s'] * 1e3:.0f} ms", f"{r['flash_speedup']:.2f}x"] for r in runs])


def data_parallel_report(a, runs, cpu):
    save_runs(a, runs, cpu)
    for r in (r for r in runs if r["bench"] == "gradient_overlap"):
        print(f"| dp={r['ranks']}, {r['parameters'] / 1e6:.1f}M parameters ({r['gradient_bytes'] / 2**20:.0f} MiB of "
              f"gradients), {r['tokens_per_rank']} tokens per rank | {r['after_backward_s'] * 1e3:.0f} ms "
              f"| {r['overlapped_s'] * 1e3:.0f} ms | {r['speedup']:.2f}x |")
    print()
    print("| operation | size | communicator | plain MPI | overhead |")
    print("|---|---|---|---|---|")
    for r in (r for r in runs if r["bench"] == "communicator_overhead"):
        size = f"{r['bytes'] / 2**20:.0f} MiB" if r["bytes"] >= 2**20 else f"{r['bytes'] / 2**10:.0f} KiB"
        print(f"| {r['op']} | {size} | {r['communicator_s'] * 1e6:.0f} us | {r['plain_mpi_s'] * 1e6:.0f} us "
              f"| {r['overhead']:.2f}x |")


def sequence_parallel_report(a, runs, cpu):
    save_runs(a, runs, cpu)
    print("| ranks | layout | tokens/s | peak memory per rank | forward bytes per rank | theory | measured / theory |")
    print("|---|---|---|---|---|---|---|")
    for r in runs:
        ratio = f"{r['forward_bytes_per_rank'] / r['theory_bytes_per_rank']:.3f}" if r["theory_bytes_per_rank"] else "-"
        print(f"| {r['ranks']} | {r['layout']} | {r['tokens_per_s']:.0f} | {r['peak_memory_bytes_per_rank'] / 2**20:.0f} MiB "
              f"| {r['forward_bytes_per_rank'] / 2**20:.2f} MiB | {r['theory_bytes_per_rank'] / 2**20:.2f} MiB | {ratio} |")


def memory_report(a, runs, cpu):
    save_runs(a, runs, cpu)
    mib = lambda b: f"{b / 2**20:.0f} MiB"
    longest = {}
    for r in (r for r in runs if r["mode"] == "fits"):
        if r["seq"] > longest.get(r["features"], {"seq": 0})["seq"]:
            longest[r["features"]] = r
    table(["memory features", "longest sequence in 512 MiB", "its step's working memory"],
          [[name, r["seq"], mib(r["step_memory_bytes"])] for name, r in longest.items()])
    if "none" in longest and "all" in longest:
        print(f"\nall / none: {longest['all']['seq'] / longest['none']['seq']:.0f}x longer")
    print()
    cost = [r for r in runs if r["mode"] == "cost"]
    base = next(r for r in cost if r["features"] == "none")
    table(["features (at 2048 tokens)", "step working memory", "step time", "time vs none"],
          [[r["features"], mib(r["step_memory_bytes"]), f"{r['step_s'] * 1e3:.0f} ms",
            f"{r['step_s'] / base['step_s']:.2f}x"] for r in cost])


def host_optimizer_report(a, runs, cpu):
    save_runs(a, runs, cpu)
    for r in (r for r in runs if r["bench"] == "adamw"):
        table(["AdamW on the host", "elements", "ours (fused)", "separate ATen ops", "speedup"],
              [["one step", f"{r['elements'] / 2**20:.0f}M", f"{r['fused_s'] * 1e3:.1f} ms", f"{r['ops_s'] * 1e3:.1f} ms",
                f"{r['speedup']:.2f}x"]])
    print()
    for r in (r for r in runs if r["bench"] == "step"):
        table(["step, layers in host chunks", "update after backward", "overlapped", "overlapped, clipping on",
               "overlap speedup"],
              [[f"{r['chunked_parameters'] / 1e6:.0f}M chunked parameters, {r['tokens']} tokens",
                f"{r['after_backward_s'] * 1e3:.0f} ms", f"{r['overlapped_s'] * 1e3:.0f} ms",
                f"{r['overlapped_clip_s'] * 1e3:.0f} ms", f"{r['speedup']:.2f}x"]])


def moe_report(a, runs, cpu):
    save_runs(a, runs, cpu)
    for r in (r for r in runs if r["bench"] == "step"):
        table(["model (4 layers, hidden 256, 2048 tokens)", "parameters", "active", "step", "vs dense"],
              [["dense (MLP 1024)", f"{r['dense_parameters'] / 1e6:.1f}M", f"{r['dense_active_parameters'] / 1e6:.2f}M",
                f"{r['dense_s'] * 1e3:.0f} ms", "1.00x"],
               ["MoE (8 experts of 512, top 2)", f"{r['moe_parameters'] / 1e6:.1f}M",
                f"{r['moe_active_parameters'] / 1e6:.2f}M", f"{r['moe_s'] * 1e3:.0f} ms", f"{r['moe_vs_dense']:.2f}x"]])
    print()
    table(["balance", "steps", "load CV (last 20)", "max load / mean", "LM loss (last 20)"],
          [[r["balance"], r["steps"], f"{r['load_cv']:.3f}", f"{r['load_max']:.2f}", f"{r['loss']:.4f}"]
           for r in runs if r["bench"] == "balance"])
    hf = next((r for r in runs if r["bench"] == "hf_layer"), None)
    for r in (r for r in runs if r["bench"] == "layer"):
        print()
        rows = [["grouped products (longtrain now)", f"{r['grouped_s'] * 1e3:.0f} ms",
                 f"{r['grouped_tokens_per_s']:.0f}", f"{r['speedup']:.2f}x",
                 f"{r['grouped_syncs']} (+{r['grouped_cpu_fallback_syncs']} inside LibTorch's CPU fallback)"],
                ["loop over experts (longtrain before)", f"{r['loop_s'] * 1e3:.0f} ms",
                 f"{r['loop_tokens_per_s']:.0f}", "1.00x", r["loop_syncs"]]]
        if hf:
            rows.append([f"transformers {hf['transformers']} Qwen3MoeSparseMoeBlock", f"{hf['hf_s'] * 1e3:.0f} ms",
                         f"{hf['hf_tokens_per_s']:.0f}", f"{r['loop_s'] / hf['hf_s']:.2f}x", "-"])
        table([f"MoE layer, hidden {r['hidden']}, {r['experts']} experts of {r['expert_width']}, top {r['top_k']}, "
               f"{r['tokens']} tokens, forward + backward", "time", "tokens/s", "vs loop", "host waits (trace)"], rows)
    print()
    table(["ep ranks", "rank", "rows sent", "rows received", "bytes sent", "theory", "measured / theory"],
          [[r["ranks"], r["rank"], f"{r['rows_sent']:.0f}", f"{r['rows_arrived']:.0f}",
            f"{r['measured_bytes'] / 2**20:.2f} MiB", f"{r['theory_bytes'] / 2**20:.2f} MiB",
            f"{r['measured_over_theory']:.3f}"] for r in runs if r["bench"] == "dispatch"])


def hf_report(a, runs, cpu):
    save_runs(a, runs, cpu)
    for r in (r for r in runs if r["bench"] == "load"):
        base = r["whole_files_s"]
        rows = [["whole files read (no slicing)", f"{r['parameters'] / 1e6:.0f}M", f"{base:.2f} s", "1.00x"]]
        for key, name in (("whole_model", "whole model"), ("tp4_rank", "one tp rank of 4"),
                          ("pp4_middle_stage", "one pipeline stage of 4")):
            rows.append([name, f"{r[key]['parameters'] / 1e6:.0f}M", f"{r[key]['seconds']:.2f} s",
                         f"{r[key]['seconds'] / base:.2f}x"])
        table([f"load {r['bytes'] / 1e6:.0f} MB of BF16 shards, page cache evicted", "parameters", "time",
               "vs whole files"], rows)
    print()
    table(["curriculum stage (8K tokens a step)", "steps timed", "tokens/s"],
          [[f"{r['seq']} tokens", r["steps"], f"{r['tokens_per_s']:.0f}"] for r in runs if r["bench"] == "curriculum"])


def resume_report(a, runs, cpu):
    save_runs(a, runs, cpu)
    table(["resume of a 56M-parameter checkpoint (tp 2 x pp 2 x dp 2, ZeRO-1 wrote it)", "rank",
           "weights and moments held",
           "peak host memory the load added", "ratio"],
          [[r["layout"], r["rank"], f"{r['held_bytes'] / 2**20:.1f} MiB", f"{r['load_peak_bytes'] / 2**20:.1f} MiB",
            f"{r['ratio']:.2f}x"] for r in sorted(runs, key=lambda r: (r["layout"], r["rank"]))])


def zero_report(a, runs, cpu):
    save_runs(a, runs, cpu)
    states = [r for r in runs if r["bench"] == "state"]
    print("model state per rank (56M parameters, fp32: MiB between steps / at the step's peak / planned)")
    levels = sorted({r["zero"] for r in states})
    rows = []
    for ranks in sorted({r["ranks"] for r in states}):
        cells = [ranks]
        for zero in levels:
            r = next((r for r in states if r["ranks"] == ranks and r["zero"] == zero), None)
            cells.append(f"{r['between_steps_bytes'] / 2**20:.0f} / {r['peak_bytes'] / 2**20:.0f} / "
                         f"{r['planned_bytes'] / 2**20:.0f}" if r else "")
        rows.append(cells)
    table(["ranks"] + [f"zero {z}" for z in levels], rows)
    print()
    hosts = [r for r in runs if r["bench"] == "host"]
    print("host memory per rank with the layers offloaded in chunks (MiB measured / planned)")
    table(["ranks"] + [f"zero {z}" for z in levels],
          [[ranks] + [next((f"{r['host_bytes'] / 2**20:.0f} / {r['planned_bytes'] / 2**20:.0f}"
                            for r in hosts if r["ranks"] == ranks and r["zero"] == zero), "")
                      for zero in levels]
           for ranks in sorted({r["ranks"] for r in hosts})])
    print()
    table(["ranks", "zero", "step", "waiting for gathers", "waiting for reductions", "against zero 1"],
          [[r["ranks"], r["zero"], f"{r['step_s']:.2f} s", f"{r['gather_wait_s']:.2f} s", f"{r['reduce_wait_s']:.2f} s",
            f"{r['over_zero1']:.2f}x"] for r in runs if r["bench"] == "step"])


def adaptive_sp_report(a, runs, cpu):
    save_runs(a, runs, cpu)
    simulated = [r for r in runs if r["bench"] == "simulate"]
    table(["batch (64 ranks, 4M tokens)", "documents", "static layout", "static step", "adaptive groups",
           "adaptive step", "method", "solve", "speedup", "bound"],
          [[i + 1, r["documents"], f"groups of {r['static_group']}", f"{r['static_s']:.2f} s",
            ", ".join(f"{n}x{size}" for size, n in r["adaptive_groups"].items()), f"{r['adaptive_s']:.2f} s",
            r["method"], f"{r['solve_s']:.2f} s", f"{r['speedup']:.2f}x", f"{r['bound_speedup']:.2f}x"]
           for i, r in enumerate(simulated)])
    trained = [r for r in runs if r["bench"] == "train"]
    if not trained:
        return
    print()
    best_static = max(r["tokens_per_s"] for r in trained if r["layout"] != "milp")
    table(["layout (8 CPU ranks)", "steps timed", "tokens/s", "vs best static", "predicted step", "measured step",
           "idle", "last step's groups"],
          [["adaptive" if r["layout"] == "milp" else f"static, groups of {r['layout']}", r["steps"],
            f"{r['tokens_per_s']:.0f}", f"{r['tokens_per_s'] / best_static:.2f}x", f"{r['predicted_s']:.2f} s",
            f"{r['measured_s']:.2f} s", f"{100 * r['idle']:.0f}%", "+".join(str(g) for g in r["last_groups"])]
           for r in trained])


def model_parallel_report(a, runs, cpu):
    save_runs(a, runs, cpu)
    table(["stages", "micro-batches", "idle measured", "1F1B theory (p-1)/(m+p-1)", "step"],
          [[r["stages"], r["micro_batches"], f"{100 * r['idle_measured']:.1f}%", f"{100 * r['idle_theory']:.1f}%",
            f"{r['step_s'] * 1e3:.0f} ms"] for r in runs if r["mode"] == "bubble"])
    print()
    table(["tp", "sequence split", "seq", "bytes sent per rank (fwd+bwd)", "theory", "measured / theory"],
          [[r["tp"], "yes" if r["sequence_split"] else "no", r["seq"], f"{r['bytes_measured'] / 2**20:.2f} MiB",
            f"{r['bytes_theory'] / 2**20:.2f} MiB", f"{r['bytes_measured'] / r['bytes_theory']:.3f}"]
           for r in runs if r["mode"] == "tp"])


if __name__ == "__main__":
    main()
