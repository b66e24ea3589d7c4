#!/usr/bin/python3
"""Markdown table (size x task) from the runs of scripts/local_table.sh: per cell the mean over
the seeds that ran, the spread of the final accuracy and the worst seed's margin over majority;
then which weights the runs used (the base-model fingerprint each metrics.h5 records, with the
model's family and held-out loss from its pretrain.json), the code and the CPU."""
import glob
import os
import statistics
import sys
from collections import defaultdict

import h5py

from run_config import read_config

ORDER = {"h2-tiny": 0, "h2-small": 1, "h2-base": 2}
BAR = 0.10  # issue 3: final accuracy at least 10 points above the majority-class rate


def read_run(path):
    with h5py.File(path, "r") as f:
        name = f["clients"].attrs["name_0"]
        config = read_config(f)
        acc = f["metrics/test_accuracy"][:, 0]
        if len(acc) < int(f.attrs["rounds_planned"]):
            raise OSError(f"{len(acc)} of {f.attrs['rounds_planned']} rounds")
        train_s = f["metrics/train_seconds"][:, 0].sum()
        attr = lambda group, key: group.attrs[key] if key in group.attrs else ""
        return name, {
            "weights": attr(f["clients"], "base_model_0"),
            "git_sha": attr(f, "git_sha"),
            "cpu": attr(f, "cpu_model"),
            "model_dir": config.get("client.0.model_dir", ""),
            "seed": config["run.seed"],
            "lr": config["client.0.lr"],
            "majority": f["clients/majority_rate"][0],
            "acc0": acc[0],
            "acc": acc[-1],
            "gen": f["metrics/test_accuracy_generate"][-1, 0],
            "tokens_per_s": f["metrics/tokens"][:, 0].sum() / train_s,
            "train_s": train_s,
            "eval_s": f["metrics/eval_seconds"][:, 0].sum(),
        }


def main(out_dir: str) -> None:
    cells = defaultdict(list)
    for path in sorted(glob.glob(os.path.join(out_dir, "*", "metrics.h5"))):
        try:
            name, run = read_run(path)
        except OSError as e:  # still being written
            print(f"skipping {path}: {e}", file=sys.stderr)
            continue
        cells[tuple(name.split("/", 1))].append(run)
    mean = lambda runs, key: statistics.fmean(r[key] for r in runs)
    print("| size | task | seeds | majority | acc round 0 | acc final (score) | acc final (generate) | "
          "final - majority | worst seed - majority | train tokens/s | train s | eval s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    met = 0
    for (size, task), runs in sorted(cells.items(), key=lambda c: (ORDER.get(c[0][0], 9), c[0][1])):
        accs = [r["acc"] for r in runs]
        spread = f" ± {statistics.stdev(accs):.3f}" if len(accs) > 1 else ""
        margins = [r["acc"] - r["majority"] for r in runs]
        met += min(margins) >= BAR
        print(f"| {size} | {task} | {len(runs)} | {mean(runs, 'majority'):.3f} | {mean(runs, 'acc0'):.3f} | "
              f"{statistics.fmean(accs):.3f}{spread} | {mean(runs, 'gen'):.3f} | {statistics.fmean(margins):+.3f} | "
              f"{min(margins):+.3f} | {mean(runs, 'tokens_per_s'):.0f} | {mean(runs, 'train_s'):.0f} | "
              f"{mean(runs, 'eval_s'):.0f} |")
    lrs = sorted({r["lr"] for runs in cells.values() for r in runs})
    print(f"\n{met} of {len(cells)} cells at least {BAR * 100:.0f} points above majority in every seed "
          f"(lr {', '.join(lrs)}).")
    print_provenance(cells)


def pretrain_log(model_dir):
    import json
    try:
        with open(os.path.join(model_dir, "pretrain.json")) as f:
            return json.load(f)
    except OSError:
        return {}


def print_provenance(cells):
    """One row per (size, weights): a size with two rows was run on two different models."""
    used = defaultdict(lambda: {"runs": 0, "model_dir": ""})
    shas, cpus = set(), set()
    for (size, _), runs in cells.items():
        for r in runs:
            u = used[(size, r["weights"])]
            u["runs"] += 1
            u["model_dir"] = u["model_dir"] or r["model_dir"] or os.path.join("data", "models", size)
            shas.add(r["git_sha"])
            cpus.add(r["cpu"])
    print("\n| size | family | held-out loss | runs | weights (model.safetensors size:FNV-1a 64) | config.json | tokenizer |")
    print("|---|---|---|---|---|---|---|")
    for (size, weights), u in sorted(used.items(), key=lambda x: (ORDER.get(x[0][0], 9), x[0][1])):
        files = dict(line.split(" ", 1) for line in weights.splitlines() if " " in line)
        log = pretrain_log(u["model_dir"])
        same = log.get("fingerprint", "").strip() == weights.strip()
        family = log.get("model_type", "?") if same else "?"
        held = f"{log['heldout_loss']:.4f}" if same and "heldout_loss" in log else "?"
        print(f"| {size} | {family} | {held} | {u['runs']} | {files.get('model.safetensors', '?')} | "
              f"{files.get('config.json', '?')} | {files.get('tokenizer', '?')} |")
    print(f"\nCode: {', '.join(sorted(shas))}; CPU: {', '.join(sorted(cpus))}.")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/local_table")
