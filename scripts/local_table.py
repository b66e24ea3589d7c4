#!/usr/bin/python3
"""Markdown table (size x task) from the runs of scripts/local_table.sh: per cell the mean over
the seeds that ran, the spread of the final accuracy and the worst seed's margin over majority."""
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
        return name, {
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


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/local_table")
