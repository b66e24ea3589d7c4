#!/usr/bin/env python3
"""How much H2Tune's shared middle matrices change each client's adapter.

A client's adapter is B (T + I) A, so ||T||_F / ||I||_F says how far the shared
part moves the adapter away from plain LoRA: near 0, the clients' adapters are B A and what the
federation shares has almost no effect. For every run directory given (or found below a given
directory), reads the newest committed checkpoint and prints, per client, the mean over layers and
module types of ||T||_F / sqrt(r_k), where T = sum_j Pi[j, l] G_j[mask] + D as the client holds it
(Pi = softmax(Z / tau) over global slots), plus the RMS of the server's bank G. Two more columns
describe the relation: "drift", the mean over the client's layers of the total-variation distance
between Pi's column and the depth prior's (softmax of -(j/(L_g-1) - l/(L_k-1))^2 / sigma^2 / tau),
0 = the prior kept, 1 = disjoint; and "round trip", the mean over layers of the share of a layer's
own T that comes back to it after one upload and download through the bank if no other client
covered its entries, sum_j Pi[j,l]^2 / sum_l' Pi[j,l'] (other clients on the same entries lower it).

    /usr/bin/python3 scripts/middle_norms.py runs/bench/hybrid/h2tune runs/bench/hybrid/h2tune-full-rank

Needs Debian's python3-h5py and numpy (run it with /usr/bin/python3).
"""
import argparse
import glob
import os
import sys

import h5py
import numpy as np

from run_config import read_config


def run_dirs(paths):
    found = []
    for p in paths:
        if os.path.isfile(os.path.join(p, "metrics.h5")):
            found.append(p)
            continue
        for m in sorted(glob.glob(os.path.join(p, "**", "metrics.h5"), recursive=True)):
            d = os.path.dirname(m)
            if os.sep + "checkpoints" + os.sep not in d + os.sep:
                found.append(d)
    return found


def relation_settings(run):
    """(tau, sigma) of the run's relation matrix."""
    with h5py.File(os.path.join(run, "metrics.h5"), "r") as f:
        config = read_config(f)
    return float(config.get("federation.relation_tau", 1.0)), float(config.get("federation.relation_sigma", 0.5))


def column_softmax(logits):
    pi = np.exp(logits - logits.max(axis=0))
    return pi / pi.sum(axis=0)


def depth_prior(global_layers, layers, sigma):
    """Z's initial value: -(j/(L_g-1) - l/(L_k-1))^2 / sigma^2 (a single layer sits at 0)."""
    j = np.arange(global_layers) / max(global_layers - 1, 1)
    l = np.arange(layers) / max(layers - 1, 1)
    return -((j[:, None] - l[None, :]) ** 2) / sigma ** 2


def relation_summary(pi, prior_pi):
    """(drift, round trip) of a column-stochastic relation [L_g, L_k] against its prior."""
    drift = float(0.5 * np.abs(pi - prior_pi).sum(axis=0).mean())
    load = pi.sum(axis=1, keepdims=True)  # each slot's total weight from this client's layers
    own = (pi ** 2 / np.where(load > 0, load, 1.0)).sum(axis=0)
    return drift, float(own.mean())


def newest_checkpoint(run):
    done = sorted(glob.glob(os.path.join(run, "checkpoints", "r*", "COMMIT")))
    return os.path.dirname(done[-1]) if done else None


def client_ratio(path, tau, sigma):
    with h5py.File(path, "r") as f:
        if "state/shared/slices" not in f:
            return None  # not an H2Tune client (a LoRA baseline or local)
        z = f["state/shared/z"][:]
        slices = f["state/shared/slices"][:]      # (L_g, M, r*r) received bank slices
        residual = f["state/shared/residual"][:]  # (L_k, M, r*r)
    pi = column_softmax(z / tau)                  # column-stochastic (L_g x L_k)
    prior_pi = column_softmax(depth_prior(z.shape[0], z.shape[1], sigma) / tau)
    t = np.einsum("jl,jme->lme", pi, slices) + residual
    r = int(round(np.sqrt(slices.shape[2])))
    drift, round_trip = relation_summary(pi, prior_pi)
    return float((np.sqrt((t ** 2).sum(axis=-1)) / np.sqrt(r)).mean()), r, drift, round_trip


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("paths", nargs="+", help="run directories or directories to search")
    args = ap.parse_args()
    runs = run_dirs(args.paths)
    if not runs:
        sys.exit("middle_norms.py: no run directories (with metrics.h5) under " + " ".join(args.paths))
    print("| run | checkpoint | client | r | mean ||T||/||I|| | bank RMS | relation drift | round trip |")
    print("|---|---|---|---|---|---|---|---|")
    for run in runs:
        ckpt = newest_checkpoint(run)
        if ckpt is None:
            print(f"middle_norms.py: {run}: no committed checkpoint, skipped", file=sys.stderr)
            continue
        with h5py.File(os.path.join(ckpt, "server.h5"), "r") as f:
            bank = f["state/bank"][:] if "state/bank" in f else None
        bank_rms = f"{np.sqrt((bank ** 2).mean()):.4f}" if bank is not None else "-"
        tau, sigma = relation_settings(run)
        for c in sorted(glob.glob(os.path.join(ckpt, "client_*.h5"))):
            got = client_ratio(c, tau, sigma)
            if got is None:
                continue
            ratio, r, drift, round_trip = got
            client = os.path.basename(c)[len("client_"):-len(".h5")].lstrip("0") or "0"
            print(f"| {run} | {os.path.basename(ckpt)} | {client} | {r} | {ratio:.3f} | {bank_rms} | "
                  f"{drift:.3f} | {round_trip:.3f} |")


if __name__ == "__main__":
    main()
