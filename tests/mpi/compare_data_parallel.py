#!/usr/bin/python3
"""Exits 0 when a run whose clients span several ranks (data parallel) computed what the same job
computes with one rank per client, within float tolerance: a group sums its members' gradients of
their parts of every batch, so only the order of float additions differs.

  compare_data_parallel.py ONE_RANK_RUN DATA_PARALLEL_RUN [--group-ranks 2,1,2,1]
      [--loss-rtol 1e-4] [--adapter-rtol 1e-3] [--accuracy-flips 0]

Checked: /metrics train_loss (relative), the accuracy columns (at most --accuracy-flips test
examples of difference per client and round), every other /metrics column except wall times
(relative 1e-4, exact for the counts), every final adapter tensor (max difference relative to the
tensor's largest value: AdamW divides by the root of the second moment, which magnifies the
rounding of gradient entries near zero, and a LoRA B that starts at zero is small after a few
steps), and /clients/group_ranks of the data-parallel run."""
import argparse
import json
import pathlib
import struct
import sys

import h5py
import numpy as np

TIMING = {"train_seconds", "eval_seconds"}
EXACT = {"tokens", "participated", "excluded", "bytes_up", "bytes_down"}
ACCURACY = {"test_accuracy", "test_accuracy_generate"}


def safetensors(path: pathlib.Path) -> dict:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        if meta["dtype"] != "F32":
            raise SystemExit(f"{path}: {name} is {meta['dtype']}, expected F32")
        a, b = meta["data_offsets"]
        out[name] = np.frombuffer(raw[8 + n + a:8 + n + b], dtype="<f4").reshape(meta["shape"])
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("one_rank")
    ap.add_argument("data_parallel")
    ap.add_argument("--group-ranks", default="")
    ap.add_argument("--loss-rtol", type=float, default=1e-4)
    ap.add_argument("--adapter-rtol", type=float, default=1e-3)
    ap.add_argument("--accuracy-flips", type=int, default=0)
    args = ap.parse_args()
    a, b = pathlib.Path(args.one_rank), pathlib.Path(args.data_parallel)
    problems, report = [], []
    with h5py.File(a / "metrics.h5", "r") as fa, h5py.File(b / "metrics.h5", "r") as fb:
        evaluated = np.minimum(fb["clients/test_examples"][()], fb.attrs.get("eval_examples", np.inf)) \
            if "eval_examples" in fb.attrs else fb["clients/test_examples"][()]
        for name in fa["metrics"]:
            if name in TIMING:
                continue
            x, y = fa["metrics"][name][()], fb["metrics"][name][()]
            if x.shape != y.shape:
                problems.append(f"/metrics/{name}: shapes {x.shape} vs {y.shape}")
                continue
            if name in EXACT:
                ok = np.array_equal(x, y, equal_nan=True)
            elif name in ACCURACY:
                tolerance = (args.accuracy_flips + 0.5) / np.maximum(evaluated, 1)
                ok = bool(np.all((np.abs(x - y) <= tolerance) | (np.isnan(x) & np.isnan(y))))
            else:
                rtol = args.loss_rtol if name == "train_loss" else 1e-4
                ok = np.allclose(x, y, rtol=rtol, atol=0, equal_nan=True)
            if name == "train_loss":
                rel = np.nanmax(np.abs(x - y) / np.maximum(np.abs(x), 1e-30))
                report.append(f"train_loss: max relative difference {rel:.2e}")
            if not ok:
                problems.append(f"/metrics/{name} differs beyond tolerance:\n{x}\nvs\n{y}")
        if args.group_ranks:
            want = np.array([int(v) for v in args.group_ranks.split(",")])
            got = fb["clients/group_ranks"][()]
            if not np.array_equal(got, want):
                problems.append(f"/clients/group_ranks is {got}, expected {want}")
    files = sorted((a / "adapters").glob("*.safetensors"))
    if not files:
        problems.append(f"no adapters in {a}")
    worst = 0.0
    for f in files:
        g = b / "adapters" / f.name
        if not g.exists():
            problems.append(f"adapter {f.name} missing from {b}")
            continue
        x, y = safetensors(f), safetensors(g)
        if x.keys() != y.keys():
            problems.append(f"adapter {f.name}: different tensors")
            continue
        for name in x:
            scale = max(float(np.max(np.abs(x[name]))), 1e-30)
            rel = float(np.max(np.abs(x[name] - y[name]))) / scale
            worst = max(worst, rel)
            if rel > args.adapter_rtol:
                problems.append(f"adapter {f.name} {name}: max difference {rel:.2e} of its largest value")
    report.append(f"adapters: max difference {worst:.2e} of a tensor's largest value")
    for line in report + problems:
        print("compare_data_parallel:", line)
    print("compare_data_parallel:", "within tolerance" if not problems else f"{len(problems)} difference(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
