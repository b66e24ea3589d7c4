#!/usr/bin/python3
"""Exits 0 when two h2tune train outputs are bit-identical: every /metrics table except wall
times (and any named with --ignore), and every final adapter file byte for byte."""
import pathlib
import sys

import h5py
import numpy as np

TIMING = {"train_seconds", "eval_seconds"}


def main() -> int:
    a, b = map(pathlib.Path, sys.argv[1:3])
    ignore = set(TIMING)
    if len(sys.argv) > 4 and sys.argv[3] == "--ignore":
        ignore |= set(sys.argv[4].split(","))
    problems = []
    with h5py.File(a / "metrics.h5", "r") as fa, h5py.File(b / "metrics.h5", "r") as fb:
        for name in fa["metrics"]:
            if name in ignore:
                continue
            x, y = fa["metrics"][name][()], fb["metrics"][name][()]
            if x.shape != y.shape or not np.array_equal(x, y, equal_nan=True):
                problems.append(f"/metrics/{name} differs:\n{x}\nvs\n{y}")
    adapters = sorted((a / "adapters").glob("*.safetensors"))
    if not adapters:
        problems.append(f"no adapters in {a}")
    for f in adapters:
        g = b / "adapters" / f.name
        if not g.exists() or f.read_bytes() != g.read_bytes():
            problems.append(f"adapter {f.name} differs")
    for p in problems:
        print("compare_runs:", p)
    print("compare_runs:", "bit-identical" if not problems else f"{len(problems)} difference(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
