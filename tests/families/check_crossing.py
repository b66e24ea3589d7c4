#!/usr/bin/python3
"""Checks that H2Tune's shared state really crosses model families (tests/families/families.cmake).

  check_crossing.py RUN_A RUN_B --changed K

RUN_A and RUN_B are two `h2tune train` outputs of the same job in which only client K differs
(here: its base model in bfloat16 instead of float32). Every random stream is keyed by (seed,
round, client) and round 0 starts from the same bank, so in round 0 every other client must log
exactly the same loss, accuracy and tokens in both runs: that pins down the runs as otherwise
identical. After the round-0 aggregation the bank carries client K's change to everyone, so the
final adapter of every other client, whatever its family, architecture and rank, must differ
between the runs. A method that did not share across families (or a bank that dropped a family's
upload) leaves some client's adapter bit-identical and fails here.
"""
import argparse
import json
import pathlib
import struct
import sys

import h5py
import numpy as np

DTYPES = {"F32": np.float32, "F64": np.float64, "F16": np.float16, "I32": np.int32, "I64": np.int64}


def read_safetensors(path):
    """The tensors of a safetensors file as numpy arrays (the format is an 8-byte header length,
    a JSON header, then raw little-endian data); BF16 stays raw uint16 bits."""
    data = pathlib.Path(path).read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    body = data[8 + n:]
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        begin, end = e["data_offsets"]
        dtype = np.uint16 if e["dtype"] == "BF16" else DTYPES[e["dtype"]]
        out[name] = np.frombuffer(body[begin:end], dtype=dtype).reshape(e["shape"])
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_a", type=pathlib.Path)
    ap.add_argument("run_b", type=pathlib.Path)
    ap.add_argument("--changed", type=int, required=True)
    args = ap.parse_args()
    problems = []
    with h5py.File(args.run_a / "metrics.h5", "r") as fa, h5py.File(args.run_b / "metrics.h5", "r") as fb:
        if fa.attrs["method"] != fb.attrs["method"]:
            problems.append(f"methods differ: {fa.attrs['method']} vs {fb.attrs['method']}")
        rounds, clients = fa["metrics/train_loss"].shape
        if fb["metrics/train_loss"].shape != (rounds, clients) or rounds < 2:
            problems.append(f"need two runs of >= 2 rounds with the same clients: {fa['metrics/train_loss'].shape} "
                            f"vs {fb['metrics/train_loss'].shape}")
            rounds = 0
        others = [k for k in range(clients) if k != args.changed]
        for name in ["train_loss", "test_accuracy", "tokens"]:
            a, b = fa["metrics"][name][()], fb["metrics"][name][()]
            if rounds and not np.array_equal(a[0, others], b[0, others]):
                problems.append(f"round 0 {name} of the unchanged clients differs (the runs are not otherwise "
                                f"identical): {a[0, others]} vs {b[0, others]}")
        if rounds:
            la, lb = fa["metrics/train_loss"][()], fb["metrics/train_loss"][()]
            print(f"client {args.changed} (changed) round-0 loss {la[0, args.changed]:.6f} vs {lb[0, args.changed]:.6f}")
            if la[0, args.changed] == lb[0, args.changed]:
                problems.append(f"client {args.changed}'s round-0 loss is the same in both runs: the change had no effect")
            for k in others:
                print(f"client {k} final-round loss {la[-1, k]:.8f} vs {lb[-1, k]:.8f}")
    for k in others if rounds else []:
        name = f"client_{k}.safetensors"
        ta = read_safetensors(args.run_a / "adapters" / name)
        tb = read_safetensors(args.run_b / "adapters" / name)
        if sorted(ta) != sorted(tb):
            problems.append(f"{name}: different tensor names")
            continue
        moved = [t for t in ta if not np.array_equal(ta[t], tb[t])]
        biggest = max((float(np.max(np.abs(ta[t].astype(np.float64) - tb[t].astype(np.float64)))) for t in moved),
                      default=0.0)
        print(f"client {k}: {len(moved)} of {len(ta)} adapter tensors differ (max abs {biggest:.3e})")
        if not moved:
            problems.append(f"client {k}'s final adapter is bit-identical in both runs: client {args.changed}'s "
                            "change never reached it through the shared bank")
    for p in problems:
        print("check_crossing:", p)
    print("check_crossing:", "OK" if not problems else f"{len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
