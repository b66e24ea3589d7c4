#!/usr/bin/python3
"""Checks the shared-channel probes (federation.eval_probes) of an H2Tune run's metrics.h5:
every participating client's probe accuracies are in [0, 1], and in round 0, whose downloaded
bank is all zeros (so T = D exactly), removing the download changes nothing: the accuracy without
it equals the run's accuracy exactly. Usage: check_probes.py RUN_DIR"""
import pathlib
import sys

import h5py
import numpy as np


def main() -> int:
    run = pathlib.Path(sys.argv[1])
    errors = []
    with h5py.File(run / "metrics.h5", "r") as f:
        m = f["metrics"]
        accuracy = m["test_accuracy"][()]
        no_download = m["test_accuracy_no_download"][()]
        no_middle = m["test_accuracy_no_middle"][()]
        took_part = m["participated"][()] == 1
    for name, values in (("test_accuracy_no_download", no_download), ("test_accuracy_no_middle", no_middle)):
        v = values[took_part]
        if v.size == 0 or not np.all((v >= 0) & (v <= 1)):
            errors.append(f"{name} outside [0, 1] (or not measured): {values}")
    if not np.array_equal(no_download[0], accuracy[0]):
        errors.append(f"round 0: accuracy without the (all-zero) download {no_download[0]} != accuracy {accuracy[0]}")
    for e in errors:
        print("check_probes:", e)
    print("check_probes:", "ok" if not errors else f"{len(errors)} problem(s)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
