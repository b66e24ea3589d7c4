#!/usr/bin/python3
"""Does a bfloat16 frozen base track float32? Trains one client of the default job (its task,
rank, learning rate, batch, sequence length) for ROUNDS x STEPS optimiser steps twice — base in
float32, then in bfloat16 (adapters, optimiser and loss in float32 either way) — and compares the
per-round mean training loss and the final test accuracy.

Usage: bench/bf16_tracking.py MODEL_DIR [--client 0] [--rounds 20] [--steps 10] [--threads 2]
                              [--build build] [--keep DIR] [--json OUT]
Runs `h2tune train --method local` in a subprocess per dtype (--build: the directory holding the
h2tune executable); reads the metrics with h5py. The run directories go to a temporary directory,
or to --keep DIR (DIR/f32, DIR/bf16, kept; each run's metrics.h5 grows round by round, so an
interrupted comparison can still be read from there).
"""
import argparse
import configparser
import json
import pathlib
import subprocess
import sys
import tempfile
import time

import h5py
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent


def one_client_job(client, path):
    """jobs/default.ini with only [client.N], renumbered 0."""
    ini = configparser.ConfigParser(inline_comment_prefixes=("#",))
    ini.read(ROOT / "jobs/default.ini")
    out = configparser.ConfigParser()
    for section in ("run", "federation", "clients"):
        out[section] = dict(ini[section])
    out["client.0"] = dict(ini[f"client.{client}"])
    with open(path, "w") as f:
        out.write(f)


def run(args, dtype, out):
    out.mkdir(parents=True, exist_ok=True)
    job = out.parent / f"job_{dtype}.ini"
    one_client_job(args.client, job)
    cmd = [str(ROOT / args.build / "h2tune"), "train", "--config", str(job), "--force",
           "--method", "local", "--rounds", str(args.rounds), "--threads", str(args.threads), "--output", str(out),
           "--set", f"clients.local_steps={args.steps}", "--set", f"clients.model_dir={args.model_dir}",
           "--set", f"clients.model_dtype={dtype}", "--set", "federation.eval_generate=false",
           "--set", f"federation.eval_examples={args.eval_examples}", "--set", "federation.checkpoint_every=0"]
    t0 = time.time()
    with open(out.parent / f"log_{dtype}.txt", "w") as log:
        subprocess.run(cmd, check=True, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    seconds = time.time() - t0
    print(f"{dtype}: {seconds:.0f} s", flush=True)
    with h5py.File(out / "metrics.h5", "r") as f:
        return f["metrics/train_loss"][:, 0], f["metrics/test_accuracy"][:, 0], seconds


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("--client", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--eval-examples", type=int, default=100)
    ap.add_argument("--build", default="build")
    ap.add_argument("--keep", help="directory for the two runs (kept); default: a temporary directory")
    ap.add_argument("--json")
    args = ap.parse_args()
    args.model_dir = str(pathlib.Path(args.model_dir).resolve())
    with tempfile.TemporaryDirectory() as tmp:
        base = pathlib.Path(args.keep).resolve() if args.keep else pathlib.Path(tmp)
        f32_loss, f32_acc, f32_s = run(args, "float32", base / "f32")
        bf_loss, bf_acc, bf_s = run(args, "bfloat16", base / "bf16")
    diff = np.abs(bf_loss - f32_loss)
    rel = diff / np.abs(f32_loss)
    print(f"{'round':>5} {'float32':>10} {'bfloat16':>10} {'|diff|':>9} {'rel':>8}")
    for r in range(len(f32_loss)):
        print(f"{r:5d} {f32_loss[r]:10.5f} {bf_loss[r]:10.5f} {diff[r]:9.5f} {rel[r]:8.4f}")
    print(f"max |diff| {diff.max():.5f}, max relative {rel.max():.4f}, mean relative {rel.mean():.4f}; "
          f"final accuracy float32 {f32_acc[-1]:.3f}, bfloat16 {bf_acc[-1]:.3f}")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(dict(
            steps=args.rounds * args.steps, float32=f32_loss.tolist(), bfloat16=bf_loss.tolist(),
            max_abs=float(diff.max()), max_rel=float(rel.max()), mean_rel=float(rel.mean()),
            rel=rel.tolist(), acc_float32=float(f32_acc[-1]), acc_bfloat16=float(bf_acc[-1]),
            seconds_float32=f32_s, seconds_bfloat16=bf_s, threads=args.threads, model_dir=args.model_dir,
            h2tune=str(ROOT / args.build / "h2tune")), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
