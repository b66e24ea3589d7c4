#!/usr/bin/python3
"""Markdown table (size x task) from the runs of scripts/local_table.sh."""
import glob
import os
import sys

import h5py


def main(out_dir: str) -> None:
    rows = []
    for path in sorted(glob.glob(os.path.join(out_dir, "*", "metrics.h5"))):
        try:
            f = h5py.File(path, "r")
        except OSError as e:  # still being written
            print(f"skipping {path}: {e}", file=sys.stderr)
            continue
        with f:
            name = f["clients"].attrs["name_0"]
            size, task = name.split("/", 1)
            acc = f["metrics/test_accuracy"][:, 0]
            gen = f["metrics/test_accuracy_generate"][:, 0]
            tokens = f["metrics/tokens"][:, 0].sum()
            train_s = f["metrics/train_seconds"][:, 0].sum()
            eval_s = f["metrics/eval_seconds"][:, 0].sum()
            majority = f["clients/majority_rate"][0]
            rows.append((size, task, majority, acc[0], acc[-1], gen[-1], acc[-1] - majority,
                         tokens / train_s, train_s, eval_s))
    order = {"h2-tiny": 0, "h2-small": 1, "h2-base": 2}
    rows.sort(key=lambda r: (order.get(r[0], 9), r[1]))
    print("| size | task | majority | acc round 0 | acc final (score) | acc final (generate) | "
          "final - majority | train tokens/s | train s | eval s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]:.3f} | {r[3]:.3f} | {r[4]:.3f} | {r[5]:.3f} | {r[6]:+.3f} | "
              f"{r[7]:.0f} | {r[8]:.0f} | {r[9]:.0f} |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/local_table")
