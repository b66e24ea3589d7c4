#!/usr/bin/python3
"""scripts/plot_results.py on a training-set-size sweep: builds metrics.h5 files with h5py (the
layout h2tune writes: /config, /metrics/test_accuracy, bytes_up/down, the method attribute), runs
the plot script on them and checks that it recognises the sweep, finds the right final accuracy of
the swept client, pairs seeds correctly and draws <scenario>_accuracy_size.png.
Usage: check_plot_size_sweep.py WORK_DIR"""

import os
import subprocess
import sys

import h5py
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPTS = os.path.join(HERE, "..", "scripts")
sys.path.insert(0, SCRIPTS)
import plot_results  # noqa: E402

CONFIG = """[run]
name = sweep
method = {method}
seed = {seed}
output = {out}

[client.0]
model = h2-tiny
train_examples = {n}

[client.1]
model = h2-small
"""


def write_run(path, method, seed, n, final0, rounds=3):
    os.makedirs(path, exist_ok=True)
    acc = np.full((rounds, 2), 0.25)
    acc[-1, 0] = final0
    acc[-1, 1] = np.nan  # client 1 sat out the last round: its latest earlier evaluation counts
    with h5py.File(os.path.join(path, "metrics.h5"), "w") as f:
        f.attrs["method"] = method
        f.attrs["rounds_planned"] = rounds
        f["config"] = CONFIG.format(method=method, seed=seed, out=path, n=n)
        f["metrics/test_accuracy"] = acc
        f["metrics/bytes_up"] = np.zeros((rounds, 2))
        f["metrics/bytes_down"] = np.zeros((rounds, 2))


def fail(msg):
    sys.exit(f"check_plot_size_sweep.py: {msg}")


def main():
    work = sys.argv[1]
    # client 0's final accuracy: local 0.2 / 0.3 / 0.4 over seeds at n = 64; h2tune + 0.1, + 0.2, + 0.3
    finals = {("local", 64): [0.2, 0.3, 0.4], ("h2tune", 64): [0.3, 0.5, 0.7],
              ("local", 256): [0.5, 0.5, 0.5], ("h2tune", 256): [0.5, 0.5]}  # h2tune lacks seed 3 at 256
    for (method, n), values in finals.items():
        for seed, v in enumerate(values, start=1):
            write_run(os.path.join(work, f"n{n}", method, f"seed{seed}"), method, seed, n, v)
    runs = [plot_results.load(p, "test_accuracy") for p in plot_results.find_runs([work])]
    if plot_results.size_sweep_client(runs) != 0:
        fail(f"the sweep over client.0.train_examples was not recognised ({plot_results.size_sweep_client(runs)})")
    if plot_results.size_sweep_client([r for r in runs if r["config"]["client.0.train_examples"] == "64"]) is not None:
        fail("runs of one size were taken for a sweep")
    by_method = plot_results.size_sweep_finals(runs, 0)
    got = sorted(by_method["h2tune"][64].values())
    if not np.allclose(got, [0.3, 0.5, 0.7]):
        fail(f"client 0's final accuracies at 64: {got}")
    points = plot_results.paired_against(by_method["h2tune"], by_method["local"])
    # differences 0.1, 0.2, 0.3: mean 0.2, sd 0.1, half-width t(0.975, 2) * 0.1 / sqrt(3)
    if len(points) != 2:
        fail(f"expected a paired point per size, got {points}")
    (n0, k0, m0, h0), (n1, k1, m1, h1) = points
    if (n0, k0) != (64, 3) or abs(m0 - 0.2) > 1e-12 or abs(h0 - 4.303 * 0.1 / np.sqrt(3)) > 1e-9:
        fail(f"paired point at 64: {points[0]}")
    if (n1, k1) != (256, 2) or abs(m1) > 1e-12 or abs(h1) > 1e-12:
        fail(f"paired point at 256 (seeds 1 and 2 only): {points[1]}")
    out = os.path.join(work, "plots")
    subprocess.run([sys.executable, os.path.join(SCRIPTS, "plot_results.py"), work, "--out", out], check=True)
    if not os.path.getsize(os.path.join(out, "sweep_accuracy_size.png")):
        fail("sweep_accuracy_size.png is empty")
    print("check_plot_size_sweep.py: ok")


if __name__ == "__main__":
    main()
