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
    ap.add_argument("--federated", action="store_true", help="expect H2Tune payload bytes and densities")
    ap.add_argument("--participants-per-round", type=int, default=0)
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
        took_part = f["metrics/participated"][()] == 1
        for name in REQUIRED:
            if name in f["metrics"] and not np.all(np.isfinite(f["metrics"][name][()][took_part])):
                errors.append(f"/metrics/{name} has non-finite values for participating clients")
        acc = f["metrics/test_accuracy"][()]
        if np.any(acc[took_part] < 0) or np.any(acc[took_part] > 1):
            errors.append("accuracy outside [0, 1]")
        if not np.all(np.isnan(acc[~took_part])):
            errors.append("clients that sat a round out must have NaN accuracy")
        if args.participants_per_round:
            counts = took_part.sum(axis=1)
            if np.any(counts != args.participants_per_round):
                errors.append(f"participants per round {counts}, expected {args.participants_per_round}")
        elif not np.all(took_part):
            errors.append("every client should take part in every round")
        if args.federated:
            up = f["metrics/bytes_up"][()]
            down = f["metrics/bytes_down"][()]
            dens = f["metrics/mask_density"][()]
            if np.any(up[took_part] <= 0) or np.any(down[took_part] <= 0):
                errors.append("participating clients must send and receive bytes")
            if np.any(dens[took_part] <= 0) or np.any(dens[took_part] > 1):
                errors.append(f"mask densities out of (0, 1]: {dens}")
            rank = f["clients/rank"][()]
            expected = (rank ** 2) / f.attrs["max_rank"] ** 2
            if not np.allclose(dens[took_part], np.broadcast_to(expected, dens.shape)[took_part]):
                errors.append("mask density is not r_k^2 / R^2")
            if np.any(f["metrics/excluded"][()] != 0):
                errors.append("no client should be excluded")
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
