#!/usr/bin/python3
"""Accuracy curves of h2tune runs, read from their metrics.h5 files, as PNG.

Per scenario (the job's [run] name) two figures, one line per method:
  <scenario>_accuracy_round.png  mean accuracy over clients against round
  <scenario>_accuracy_bytes.png  the same against cumulative bytes (up + down, all clients) on a
                                 log x-axis; methods that send nothing (local, or LoRA baselines
                                 whose clients all train alone) are a dotted horizontal line
and, when a scenario's runs differ only in one client's training-set size
(`client.K.train_examples`, as in the scarce-data sweep), a third:
  <scenario>_accuracy_size.png   client K's final accuracy against its training examples, one line
                                 per method (band = +-1 std over seeds), and beside it each method's
                                 paired difference to `local` over the seeds both ran, with the
                                 95 % Student-t interval
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
import re
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
        "final_clients": filled[-1],  # [clients]: each client's latest evaluation
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


# Two-sided 95 % Student-t quantiles t_{0.975, df} for df = 1..30 (beyond: the normal 1.96).
T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
        2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
        2.045, 2.042]


def t975(df):
    return T975[df - 1] if df <= len(T975) else 1.96


SIZE_KEY = re.compile(r"^client\.(\d+)\.train_examples$")


def size_sweep_client(runs):
    """K when the runs of one scenario differ (apart from seeds and method-implied keys) only in
    client.K.train_examples, else None."""
    keys = set()
    for r in runs:
        keys |= set(r["config"])
    keys -= IGNORED_KEYS
    differing = [k for k in sorted(keys)
                 if len({r["config"].get(k, "") for r in runs if k not in r["implied"]}) > 1]
    if len(differing) != 1 or not SIZE_KEY.match(differing[0]):
        return None
    return int(SIZE_KEY.match(differing[0]).group(1))


def size_sweep_finals(runs, client):
    """{method: {train_examples: {seed: client's final accuracy}}} (0 = the whole split: no point)."""
    key = f"client.{client}.train_examples"
    by_method = {}
    for r in runs:
        size = int(r["config"].get(key, "0") or 0)
        if size > 0:
            by_method.setdefault(r["method"], {}).setdefault(size, {})[r["seed"]] = float(r["final_clients"][client])
    return by_method


def paired_against(finals, other):
    """Per size, the mean of (finals - other) over the seeds both ran and the half-width of its 95 %
    Student-t interval: [(size, seeds, mean, half_width)], sizes with fewer than 2 shared seeds left out."""
    points = []
    for n in sorted(finals):
        shared = sorted(set(finals[n]) & set(other.get(n, {})))
        if len(shared) < 2:
            continue
        d = np.array([finals[n][s] - other[n][s] for s in shared], dtype=float)
        points.append((n, len(d), float(d.mean()), t975(len(d) - 1) * float(d.std(ddof=1)) / math.sqrt(len(d))))
    return points


def plot_size_sweep(scenario, runs, client, out_dir, metric, dpi):
    by_method = size_sweep_finals(runs, client)
    if not by_method:
        return []
    key = f"client.{client}.train_examples"
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    fig, (ax_a, ax_d) = plt.subplots(1, 2, figsize=(12, 4.5))
    all_sizes = sorted({n for finals in by_method.values() for n in finals})
    for method in sorted(by_method, key=method_key):
        color = colors[method_key(method)[0] % len(colors)]
        sizes = sorted(by_method[method])
        vals = [np.array(list(by_method[method][n].values()), dtype=float) for n in sizes]
        mean = np.array([v.mean() for v in vals])
        std = np.array([v.std(ddof=1) if len(v) > 1 else 0.0 for v in vals])
        seeds = sorted({len(v) for v in vals})
        ax_a.plot(sizes, mean, marker="o", color=color, label=f"{method} (seeds {'/'.join(map(str, seeds))})")
        ax_a.fill_between(sizes, mean - std, mean + std, color=color, alpha=0.2)
        if method == "local" or "local" not in by_method:
            continue
        points = paired_against(by_method[method], by_method["local"])
        if points:
            xs, _, ds, hs = zip(*points)
            ax_d.errorbar(xs, ds, yerr=hs, marker="o", capsize=4, color=color, label=f"{method} - local")
    ax_d.axhline(0.0, color="grey", linewidth=0.8)
    for ax in (ax_a, ax_d):
        ax.set_xscale("log")
        ax.set_xticks(all_sizes)
        ax.set_xticklabels([str(n) for n in all_sizes])
        ax.minorticks_off()
        ax.set_xlabel(f"client {client}'s training examples ({key})")
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small")
    suffix = " (generate)" if metric.endswith("generate") else ""
    ax_a.set_ylabel(f"client {client}'s final accuracy{suffix}")
    ax_a.set_title(f"{scenario}: accuracy against training-set size (band = ±1 std)")
    ax_d.set_ylabel("paired difference in final accuracy")
    ax_d.set_title("minus local, paired over seeds (95 % Student-t interval)")
    fig.tight_layout()
    path = os.path.join(out_dir, f"{safe(scenario)}_accuracy_size.png")
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return [path]


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
    by_scenario = {}
    for r in runs:
        by_scenario.setdefault(r["scenario"], []).append(r)
    for scenario, members in by_scenario.items():
        client = size_sweep_client(members)
        if client is not None:
            for path in plot_size_sweep(scenario, members, client, out_dir, args.metric, args.dpi):
                print(path)


if __name__ == "__main__":
    main()
