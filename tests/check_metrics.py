#!/usr/bin/python3
"""Checks a metrics.h5 from h5py the way a user's analysis would read it (docs/hdf5.md)."""
import argparse
import sys

import h5py
import numpy as np

REQUIRED = ["train_loss", "test_accuracy", "test_accuracy_generate", "tokens", "bytes_up", "bytes_down",
            "mask_density", "train_seconds", "excluded"]


def check_mask_refresh(f, args) -> list:
    """Masks change only at refresh rounds, only for clients with r < R, and the bytes show it:
    a changed mask travels down as int32 indices; Taylor scores travel up the round before. Every
    array on the wire carries an 8-byte length."""
    errors = []
    changed = f["metrics/mask_changed"][()]
    rank = f["clients/rank"][()].astype(int)
    R = int(f.attrs["max_rank"])
    modules = next(line.split("=", 1)[1] for line in f["config"][()].decode().splitlines()
                   if line.strip().startswith("modules")).strip().split(",")
    M = len(modules)
    due = [r > 0 and args.mask_refresh > 0 and r % args.mask_refresh == 0 for r in range(args.rounds)]
    if np.any(changed[[not d for d in due]] != 0):
        errors.append("mask_changed is non-zero outside refresh rounds")
    if np.any(changed[:, rank == R] != 0):
        errors.append("a client with r = R has only one possible mask, yet it changed")
    if any(due) and not np.any(changed[due][:, rank < R] > 0):
        errors.append("no mask changed at any refresh round")
    if np.any((changed < 0) | (changed > 1)):
        errors.append("mask_changed outside [0, 1]")
    down = f["metrics/bytes_down"][()]
    up = f["metrics/bytes_up"][()]
    if not args.mask_refresh:
        return errors  # byte accounting of refreshes is checked on runs where every client takes part
    for r in range(1, args.rounds):
        for k in range(len(rank)):
            extra_down = down[r, k] - down[0, k]  # round 0 never changes masks
            want = 8 + 4 * M * rank[k] ** 2 if changed[r, k] > 0 else 0
            if extra_down != want:
                errors.append(f"round {r} client {k}: {extra_down:.0f} extra bytes down, expected {want}")
            if args.mask_score == "taylor" and r + 1 < args.rounds:
                sends = due[r + 1] if r + 1 < len(due) else False
                extra_up = up[r, k] - up[args.rounds - 1, k]
                want_up = 16 + 4 * (M * rank[k] ** 2 + M) if sends else 0
                if extra_up != want_up:
                    errors.append(f"round {r} client {k}: {extra_up:.0f} extra bytes up, expected {want_up}")
    return errors


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("path")
    ap.add_argument("--clients", type=int, required=True)
    ap.add_argument("--rounds", type=int, required=True)
    ap.add_argument("--federated", action="store_true", help="expect H2Tune payload bytes and densities")
    ap.add_argument("--participants-per-round", type=int, default=0)
    ap.add_argument("--mask-refresh", type=int, default=0, help="the run re-selected masks every N rounds")
    ap.add_argument("--mask-score", default="magnitude")
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
        if args.federated:
            errors += check_mask_refresh(f, args)
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
