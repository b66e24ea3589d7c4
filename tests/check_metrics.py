#!/usr/bin/python3
"""Checks a metrics.h5 from h5py the way a user's analysis would read it (docs/hdf5.md)."""
import argparse
import sys

import h5py
import numpy as np

REQUIRED = ["train_loss", "test_accuracy", "test_accuracy_generate", "tokens", "bytes_up", "bytes_down",
            "mask_density", "train_seconds", "excluded"]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("path")
    ap.add_argument("--clients", type=int, required=True)
    ap.add_argument("--rounds", type=int, required=True)
    args = ap.parse_args()
    errors = []
    with h5py.File(args.path, "r") as f:
        for attr in ["h2tune_version", "git_sha", "torch_version", "mpi_version", "hdf5_version", "method"]:
            if attr not in f.attrs:
                errors.append(f"missing attribute /{attr}")
        if "[run]" not in f["config"][()].decode():
            errors.append("/config does not hold the resolved job")
        for name in REQUIRED:
            ds = f["metrics"].get(name)
            if ds is None:
                errors.append(f"missing /metrics/{name}")
                continue
            if ds.shape != (args.rounds, args.clients):
                errors.append(f"/metrics/{name} has shape {ds.shape}, expected {(args.rounds, args.clients)}")
            if not np.all(np.isfinite(ds[()])):
                errors.append(f"/metrics/{name} has non-finite values")
        acc = f["metrics/test_accuracy"][()]
        if np.any(acc < 0) or np.any(acc > 1):
            errors.append("accuracy outside [0, 1]")
        maj = f["clients/majority_rate"][()]
        if maj.shape != (args.clients,) or np.any(maj <= 0) or np.any(maj > 1):
            errors.append(f"/clients/majority_rate malformed: {maj}")
        if f["rounds/round_seconds"].shape != (args.rounds, 1):
            errors.append("/rounds/round_seconds has the wrong shape")
    for e in errors:
        print("check_metrics:", e, file=sys.stderr)
    print("check_metrics:", "OK" if not errors else f"{len(errors)} problem(s)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
