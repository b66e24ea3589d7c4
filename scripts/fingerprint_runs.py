#!/usr/bin/env python3
"""Prints one line per result of every run under ROOT: the SHA-256 of each metrics.h5 dataset and
attribute (wall times and the build's identity left out) and of every adapter file, so that two
trees of runs made by two builds can be compared with `diff`. Usage: fingerprint_runs.py ROOT
Needs h5py (Debian's python3-h5py: run with /usr/bin/python3)."""
import hashlib
import pathlib
import sys

import h5py
import numpy as np

# Wall-clock measurements and the build's own identity differ between any two runs.
SKIPPED_DATASETS = {"metrics/train_seconds", "metrics/eval_seconds", "rounds/aggregate_seconds",
                    "rounds/round_seconds"}
SKIPPED_ATTRIBUTES = {"checkpoint_seconds_last", "git_sha", "h2tune_version", "torch_version", "mpi_version", "hdf5_version"}


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def value_bytes(value) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    array = np.asarray(value)
    return array.dtype.str.encode() + str(array.shape).encode() + array.tobytes()


def metrics_lines(run: pathlib.Path, path: pathlib.Path):
    with h5py.File(path, "r") as f:
        for key in sorted(f.attrs):
            if key not in SKIPPED_ATTRIBUTES:
                yield f"{run} attr:{key} {digest(value_bytes(f.attrs[key]))}"
        names = []
        f.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
        for name in sorted(names):
            if name in SKIPPED_DATASETS:
                continue
            yield f"{run} {name} {digest(value_bytes(f[name][()]))}"
        for group in ("clients",):
            if group in f:
                for key in sorted(f[group].attrs):
                    yield f"{run} {group}@{key} {digest(value_bytes(f[group].attrs[key]))}"


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    root = pathlib.Path(sys.argv[1])
    runs = sorted(p.parent for p in root.rglob("metrics.h5"))
    if not runs:
        print(f"fingerprint_runs.py: no metrics.h5 under {root}", file=sys.stderr)
        return 1
    for run in runs:
        rel = run.relative_to(root)
        for line in metrics_lines(rel, run / "metrics.h5"):
            print(line)
        for adapter in sorted((run / "adapters").glob("*.safetensors")):
            print(f"{rel} adapters/{adapter.name} {digest(adapter.read_bytes())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
