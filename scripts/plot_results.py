#!/usr/bin/python3
"""Accuracy curves of h2tune runs, read from their metrics.h5 files, as PNG.

Per scenario (the job's [run] name) two figures, one line per method:
  <scenario>_accuracy_round.png  mean accuracy over clients against round
  <scenario>_accuracy_bytes.png  the same against cumulative bytes (up + down, all clients) on a
                                 log x-axis; methods that send nothing (local, or LoRA baselines
                                 whose clients all train alone) are a dotted horizontal line
Lines are the mean over seeds, the band is +- one sample standard deviation over seeds (n > 1).
With partial participation a client's accuracy in a round it sat out is its latest earlier
evaluation (rounds before its first evaluation leave it out of the mean).

Runs of one scenario with different settings (other than seed, output, threads and what an
ablation method sets itself) are drawn as separate scenarios <scenario>_cfg1, _cfg2, ... and the
differing keys are printed, as `h2tune report` does.

  /usr/bin/python3 scripts/plot_results.py runs/bench                # a bench root (searched)
  /usr/bin/python3 scripts/plot_results.py runs/a runs/b --out plots # run directories
Needs Debian's python3-h5py and python3-matplotlib (hence /usr/bin/python3).
"""

import argparse
import math
import os
import sys

try:
    import h5py
    import numpy as np
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError as e:  # pragma: no cover
    sys.exit(f"plot_results.py: {e}; run it with /usr/bin/python3 (Debian's python3-h5py, python3-matplotlib)")

from run_config import read_config

METHOD_ORDER = ["local", "h2tune", "h2tune-dense", "fedit", "ffa", "fedsa", "hetlora", "flexlora", "flora",
                "h2tune-full-rank", "h2tune-depth", "h2tune-end", "h2tune-joint"]
IGNORED_KEYS = {"run.seed", "run.output", "run.threads", "run.method", "run.name"}


def find_runs(paths):
    """metrics.h5 files: the given files, run directories, or every run below a directory."""
    found = []
    for p in paths:
        if os.path.isfile(p):
            found.append(p)
        elif os.path.isfile(os.path.join(p, "metrics.h5")):
            found.append(os.path.join(p, "metrics.h5"))
        elif os.path.isdir(p):
            below = []
            for root, dirs, files in os.walk(p):
                dirs[:] = sorted(d for d in dirs if d != "checkpoints")  # checkpoints hold a metrics copy
                if "metrics.h5" in files:
                    below.append(os.path.join(root, "metrics.h5"))
                    dirs[:] = []
            if not below:
                sys.exit(f"plot_results.py: {p}: no metrics.h5 in this directory or below it")
            found.extend(sorted(below))
        else:
            sys.exit(f"plot_results.py: {p}: no such file or directory")
    return found


def implied_keys(method, clients):
    """Keys an ablation sets itself (the `implies` entries of the method table, src/core/methods.cpp)."""
    if method in ("h2tune-depth", "h2tune-end"):
        return {"federation.align"}
    if method == "h2tune-joint":
        return {"federation.alternate"}
    if method == "h2tune-full-rank":
        return {f"client.{k}.rank" for k in range(clients)}
    return set()


def load(path, metric):
    with h5py.File(path, "r") as f:
        planned = int(f.attrs.get("rounds_planned", 0))
        acc = f[f"metrics/{metric}"][()]  # [rounds, clients]
        if acc.shape[0] == 0 or (planned and acc.shape[0] < planned):
            print(f"plot_results.py: skipped {path}: {acc.shape[0]} of {planned} rounds", file=sys.stderr)
            return None
        config = read_config(f)
        up = np.nan_to_num(f["metrics/bytes_up"][()])
        down = np.nan_to_num(f["metrics/bytes_down"][()])
        method = f.attrs["method"]
        method = method.decode() if isinstance(method, bytes) else str(method)
    acc = acc.astype(float)
    acc[acc < 0] = np.nan  # -1: not evaluated (generation disabled)
    # Carry each client's latest evaluation forward through rounds it sat out.
    filled = acc.copy()
    for r in range(1, filled.shape[0]):
        gap = np.isnan(filled[r])
        filled[r, gap] = filled[r - 1, gap]
    with np.errstate(all="ignore"):
        mean_acc = np.nanmean(filled, axis=1)
    return {
        "path": path,
        "method": method,
        "scenario": config.get("run.name", "(unnamed)"),
        "seed": config.get("run.seed", "?"),
        "config": config,
        "implied": implied_keys(method, acc.shape[1]),
        "acc": mean_acc,  # [rounds]
        "cum_bytes": np.cumsum((up + down).sum(axis=1)),  # [rounds]
    }


def same_variant(a, b):
    skip = IGNORED_KEYS | a["implied"] | b["implied"]
    keys = (set(a["config"]) | set(b["config"])) - skip
    return all(a["config"].get(k, "") == b["config"].get(k, "") for k in keys)


def group_runs(runs):
    """{scenario label: {method: [runs]}}, splitting a scenario's differing configurations."""
    by_scenario = {}
    for r in runs:
        variants = by_scenario.setdefault(r["scenario"], [])
        for v in variants:
            if all(same_variant(r, m) for m in v):
                v.append(r)
                break
        else:
            variants.append([r])
    out = {}
    for sc, variants in by_scenario.items():
        if len(variants) > 1:
            keys = set()
            for v in variants:
                for m in v:
                    keys |= set(m["config"])
            keys -= IGNORED_KEYS
            differing = sorted(k for k in keys if len({m["config"].get(k, "") for v in variants for m in v
                                                       if k not in m["implied"]}) > 1)
            print(f"plot_results.py: scenario {sc} has {len(variants)} configurations, drawn separately; "
                  f"they differ in: {' '.join(differing)}", file=sys.stderr)
        for i, v in enumerate(variants):
            label = sc if len(variants) == 1 else f"{sc}_cfg{i + 1}"
            methods = out.setdefault(label, {})
            for r in v:
                methods.setdefault(r["method"], []).append(r)
    return out


def seed_stats(series):
    """Mean and sample std over seeds of equally long series (truncated to the shortest)."""
    n = min(len(s) for s in series)
    a = np.array([s[:n] for s in series], dtype=float)
    with np.errstate(all="ignore"):
        mean = np.nanmean(a, axis=0)
        std = np.nanstd(a, axis=0, ddof=1) if a.shape[0] > 1 else np.zeros(n)
    return mean, np.nan_to_num(std), a.shape[0]


def method_key(m):
    return (METHOD_ORDER.index(m) if m in METHOD_ORDER else len(METHOD_ORDER), m)


def safe(name):
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def plot_scenario(label, methods, out_dir, metric, dpi):
    ylabel = "mean accuracy over clients" + (" (generate)" if metric.endswith("generate") else "")
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    fig_r, ax_r = plt.subplots(figsize=(7, 4.5))
    fig_b, ax_b = plt.subplots(figsize=(7, 4.5))
    zero_bytes = []
    for method in sorted(methods, key=method_key):
        runs = methods[method]
        color = colors[method_key(method)[0] % len(colors)]  # one colour per method in every figure
        acc, acc_std, n = seed_stats([r["acc"] for r in runs])
        cum, _, _ = seed_stats([r["cum_bytes"] for r in runs])
        rounds = np.arange(1, len(acc) + 1)
        name = f"{method} (n={n})"
        ax_r.plot(rounds, acc, marker="o", color=color, label=name)
        if n > 1:
            ax_r.fill_between(rounds, acc - acc_std, acc + acc_std, color=color, alpha=0.2)
        if cum[-1] <= 0:
            zero_bytes.append((method, acc[-1], color, n))
            continue
        pos = cum > 0
        ax_b.plot(cum[pos], acc[pos], marker="o", color=color, label=name)
        if n > 1:
            ax_b.fill_between(cum[pos], (acc - acc_std)[pos], (acc + acc_std)[pos], color=color, alpha=0.2)
    for method, final, color, n in zero_bytes:
        ax_b.axhline(final, linestyle=":", color=color, label=f"{method} (n={n}, 0 bytes, final)")
    ax_r.set_xlabel("round (1 = the first, as h2tune train prints it)")
    ax_r.set_ylabel(ylabel)
    ax_r.set_title(f"{label}: accuracy per round (mean over seeds, band = ±1 std)")
    ax_r.xaxis.get_major_locator().set_params(integer=True)
    ax_b.set_xscale("log")
    ax_b.set_xlabel("cumulative bytes, up + down, all clients")
    ax_b.set_ylabel(ylabel)
    ax_b.set_title(f"{label}: accuracy against communication")
    written = []
    for fig, ax, suffix in ((fig_r, ax_r, "accuracy_round"), (fig_b, ax_b, "accuracy_bytes")):
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small")
        fig.tight_layout()
        path = os.path.join(out_dir, f"{safe(label)}_{suffix}.png")
        fig.savefig(path, dpi=dpi)
        plt.close(fig)
        written.append(path)
    return written


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("paths", nargs="+", help="run directories, metrics.h5 files or directories to search")
    ap.add_argument("--out", help="output directory (default: PATH/plots for one directory, else plots)")
    ap.add_argument("--metric", default="test_accuracy", choices=["test_accuracy", "test_accuracy_generate"])
    ap.add_argument("--dpi", type=int, default=120)
    args = ap.parse_args()
    out_dir = args.out or (os.path.join(args.paths[0], "plots")
                           if len(args.paths) == 1 and os.path.isdir(args.paths[0]) else "plots")
    runs = [r for r in (load(p, args.metric) for p in find_runs(args.paths)) if r is not None]
    if not runs:
        sys.exit("plot_results.py: no complete run to plot")
    os.makedirs(out_dir, exist_ok=True)
    for label, methods in group_runs(runs).items():
        for path in plot_scenario(label, methods, out_dir, args.metric, args.dpi):
            print(path)


if __name__ == "__main__":
    main()
