#!/usr/bin/python3
"""Checks from metrics.h5 that a LoRA-baseline run aggregated exactly the clients of one group.

  check_lora_groups.py METRICS_H5 --group 1,5

The LoRA baselines aggregate only among clients of one architecture (docs/jobs.md). Across model
families that leaves most clients alone: they must neither send nor receive a byte in any round,
while every member of the group uploads its factors every round and receives the aggregate from
round 1 on (round 0 starts from the common initial adapter, nothing comes down).
"""
import argparse
import sys

import h5py
import numpy as np


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("path")
    ap.add_argument("--group", required=True, help="comma-separated client ids that aggregate together")
    args = ap.parse_args()
    group = sorted(int(k) for k in args.group.split(","))
    problems = []
    with h5py.File(args.path, "r") as f:
        up, down = f["metrics/bytes_up"][()], f["metrics/bytes_down"][()]
        rounds, clients = up.shape
        alone = [k for k in range(clients) if k not in group]
        if np.any(up[:, alone] != 0) or np.any(down[:, alone] != 0):
            problems.append(f"clients {alone} train alone but moved bytes: up {up[:, alone]}, down {down[:, alone]}")
        if np.any(up[:, group] <= 0):
            problems.append(f"group {group} must upload every round: {up[:, group]}")
        if rounds < 2 or np.any(down[1:, group] <= 0):
            problems.append(f"group {group} must receive the aggregate from round 1 on: {down[:, group]}")
        print(f"bytes up per round and client:\n{up}\nbytes down:\n{down}")
    for p in problems:
        print("check_lora_groups:", p)
    print("check_lora_groups:", "OK" if not problems else f"{len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
