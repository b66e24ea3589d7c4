#!/usr/bin/python3
"""Per-round overhead and bytes on the wire of finished h2tune runs, read from their metrics.h5.

(4) Overhead: everything in a round that is not local training or evaluation. Clients that share an
MPI rank run one after the other, so the critical path of a round is the busiest rank:
max over ranks of sum over its participating clients of (train_seconds + eval_seconds). Then

    overhead = round_seconds - critical path           (communication, waiting, aggregation, ...)

round_seconds (rank 0's clock) ends when the round's uploads are aggregated; the HDF5 append, the
decision messages and the checkpoint come after it and are not in it. Two measures of that part:
  * checkpoint_seconds_last (a root attribute, when present): the last checkpoint's time, amortised
    over checkpoint_every rounds and added to both the overhead and the round ("+ckpt share");
  * when the run directory still holds two consecutive round-end checkpoints
    (checkpoints/rNNNNNN.0/COMMIT, keep_checkpoints >= 2), the wall time between their COMMIT files
    is one full round period; minus that round's round_seconds it is everything after the
    aggregation (HDF5, decisions, checkpoint) — "outside".

(5) Bytes: bytes_up / bytes_down per client per round next to
  * dense_bank_bytes (L_g x M x R^2 x 4: a dense exchange of the whole bank),
  * FedIT's A + B: L_k x sum over adapted modules of r_k (d_in + d_out) x 4 bytes (each way), with
    d_in/d_out from the client's model config.json (k and v: kv_heads x head_dim outputs),
  * the ideal sparse payload: up = L_k M n_k x 4 (T values) + L_g L_k x 4 (relation),
    down = L_g M n_k x 4 (bank slices), plus M n_k x --index-bytes where masks travel (round 0 up;
    down in rounds whose mask changed), n_k = mask_density x R^2 (= r_k^2). measured / ideal is the
    framing overhead.

  /usr/bin/python3 bench/round_overhead.py runs/default/metrics.h5 [more.h5 ...] [--json out.json]
"""

import argparse
import configparser
import glob
import json
import math
import os
import re
import statistics
import sys

try:
    import h5py
    import numpy as np
except ImportError as e:  # pragma: no cover
    sys.exit(f"round_overhead.py: {e}; run it with /usr/bin/python3 (Debian's h5py)")

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
SHORT = {"q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "o_proj", "gate": "gate_proj", "up": "up_proj",
         "down": "down_proj"}


def read_config(f):
    cp = configparser.ConfigParser(interpolation=None)
    cp.optionxform = str
    raw = f["config"][()]
    cp.read_string(raw.decode() if isinstance(raw, bytes) else str(raw))
    return cp


def model_dims(model_dir):
    with open(os.path.join(model_dir, "config.json")) as fh:
        c = json.load(fh)
    heads = int(c["num_attention_heads"])
    kv = int(c.get("num_key_value_heads") or heads)
    hidden, inter = int(c["hidden_size"]), int(c["intermediate_size"])
    hd = int(c.get("head_dim") or hidden // heads)
    return {
        "layers": int(c["num_hidden_layers"]),
        "dims": {"q": (hidden, heads * hd), "k": (hidden, kv * hd), "v": (hidden, kv * hd), "o": (heads * hd, hidden),
                 "gate": (hidden, inter), "up": (hidden, inter), "down": (inter, hidden)},
    }


def resolve_model_dir(cp, k, models_dir):
    sec = f"client.{k}"
    get = (lambda key: cp.get(sec, key, fallback=None) or (cp.get("clients", key, fallback=None)
                                                             if cp.has_section("clients") else None))
    model_dir, model = get("model_dir"), get("model")
    candidates = []
    if model_dir:
        candidates += [model_dir, os.path.join(ROOT, model_dir)]
    if model:
        candidates.append(os.path.join(models_dir, model))
    for c in candidates:
        if os.path.exists(os.path.join(c, "config.json")):
            return c
    raise FileNotFoundError(f"client {k}: no config.json in {candidates}")


def critical_path(train, evals, hosts, participated):
    """Per round: max over ranks of the summed train + eval seconds of the rank's clients."""
    rounds, K = train.shape
    out = np.zeros(rounds)
    busiest = np.zeros(rounds, dtype=int)
    for r in range(rounds):
        per_rank = {}
        for k in range(K):
            if participated is not None and not participated[r, k]:
                continue
            t = (0.0 if not math.isfinite(train[r, k]) else train[r, k]) + \
                (0.0 if not math.isfinite(evals[r, k]) else evals[r, k])
            per_rank[hosts[k]] = per_rank.get(hosts[k], 0.0) + t
        if per_rank:
            busiest[r], out[r] = max(per_rank.items(), key=lambda kv: kv[1])
    return out, busiest


def commit_periods(run_dir, round_seconds):
    """Wall time between consecutive round-end checkpoint commits, per round they enclose."""
    stamps = {}
    for commit in glob.glob(os.path.join(run_dir, "checkpoints", "r*.0", "COMMIT")):
        m = re.match(r"r(\d+)\.0$", os.path.basename(os.path.dirname(commit)))
        if m:
            stamps[int(m.group(1))] = os.stat(commit).st_mtime_ns / 1e9
    out = []
    for n in sorted(stamps):
        # rN.0 is written after round index N-1; r(N+1).0 after round index N.
        if n + 1 in stamps and n < len(round_seconds):
            period = stamps[n + 1] - stamps[n]
            out.append({"round": n, "period_seconds": period, "round_seconds": float(round_seconds[n]),
                        "outside_round_seconds": period - float(round_seconds[n])})
    return out


def analyse(path, models_dir, index_bytes):
    with h5py.File(path, "r") as f:
        attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
        cp = read_config(f)
        m = {name: f[f"metrics/{name}"][()] for name in f["metrics"].keys()}
        rounds_s = f["rounds/round_seconds"][()].reshape(-1)
        aggregate_s = f["rounds/aggregate_seconds"][()].reshape(-1) if "rounds/aggregate_seconds" in f else None
        clients = {name: f[f"clients/{name}"][()] for name in f["clients"].keys()}
        names = [f["clients"].attrs.get(f"name_{k}", f"client {k}") for k in range(len(clients["rank"]))]
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in names]

    K = len(clients["rank"])
    rounds = len(rounds_s)
    hosts = clients["host_rank"].astype(int)
    participated = m["participated"].astype(bool) if "participated" in m else None
    crit, busiest = critical_path(m["train_seconds"], m["eval_seconds"], hosts, participated)
    overhead = rounds_s - crit
    ckpt = attrs.get("checkpoint_seconds_last")
    every = cp.getint("federation", "checkpoint_every", fallback=0) if cp.has_section("federation") else 0
    ckpt_per_round = (float(ckpt) / every) if (ckpt is not None and every > 0) else None
    per_round = []
    for r in range(rounds):
        row = {"round": r, "round_seconds": float(rounds_s[r]), "critical_train_eval_seconds": float(crit[r]),
               "busiest_rank": int(busiest[r]), "overhead_seconds": float(overhead[r]),
               "overhead_share": float(overhead[r] / rounds_s[r]) if rounds_s[r] > 0 else None,
               "aggregate_seconds": float(aggregate_s[r]) if aggregate_s is not None else None}
        if ckpt_per_round is not None:
            total = rounds_s[r] + ckpt_per_round
            row["overhead_share_with_checkpoint"] = float((overhead[r] + ckpt_per_round) / total)
        per_round.append(row)

    # ---- bytes
    method = str(attrs.get("method", ""))
    R = int(attrs.get("max_rank", 0) or 0)
    Lg = int(attrs.get("global_layers", 0) or 0)
    dense = int(attrs.get("dense_bank_bytes", 0) or 0)
    modules = [x.strip() for x in cp.get("federation", "modules", fallback="q,k,v,o,gate,up,down").split(",") if x.strip()]
    M = len(modules)
    density = m.get("mask_density")
    changed = m.get("mask_changed")
    per_client = []
    for k in range(K):
        rank = int(clients["rank"][k])
        layers = int(clients["layers"][k])
        try:
            dims = model_dims(resolve_model_dir(cp, k, models_dir))
            fedit = layers * sum(rank * (dims["dims"][mod][0] + dims["dims"][mod][1]) * 4 for mod in modules)
        except (FileNotFoundError, KeyError) as e:
            print(f"{path}: {e}; FedIT bytes unknown", file=sys.stderr)
            fedit = None
        part = participated[:, k] if participated is not None else np.ones(rounds, dtype=bool)
        up, down = m["bytes_up"][:, k], m["bytes_down"][:, k]
        rows = []
        for r in range(rounds):
            if not part[r]:
                continue
            row = {"round": r, "bytes_up": float(up[r]), "bytes_down": float(down[r])}
            if method.startswith("h2tune") and R > 0:
                dens = float(density[r, k]) if density is not None and math.isfinite(density[r, k]) else rank * rank / R / R
                n = int(round(dens * R * R))
                ideal_up = layers * M * n * 4 + Lg * layers * 4 + (M * n * index_bytes if r == 0 else 0)
                mask_down = changed is not None and math.isfinite(changed[r, k]) and changed[r, k] > 0
                ideal_down = Lg * M * n * 4 + (M * n * index_bytes if mask_down else 0)
                row.update({"n": n, "ideal_up": ideal_up, "ideal_down": ideal_down,
                            "up_over_ideal": up[r] / ideal_up, "down_over_ideal": down[r] / ideal_down})
            rows.append(row)
        steady = [x for x in rows if x["round"] > 0]
        summary = {
            "client": k, "name": names[k], "rank": rank, "layers": layers, "host_rank": int(hosts[k]),
            "fedit_a_plus_b_bytes": fedit, "dense_bank_bytes": dense,
            "round0_up": rows[0]["bytes_up"] if rows and rows[0]["round"] == 0 else None,
            "steady_up": statistics.median(x["bytes_up"] for x in steady) if steady else None,
            "steady_down": statistics.median(x["bytes_down"] for x in steady) if steady else None,
            "rounds": rows,
        }
        if steady and "ideal_up" in steady[0]:
            summary["steady_up_over_ideal"] = statistics.median(x["up_over_ideal"] for x in steady)
            summary["steady_down_over_ideal"] = statistics.median(x["down_over_ideal"] for x in steady)
            if rows[0]["round"] == 0:
                summary["round0_up_over_ideal"] = rows[0]["up_over_ideal"]
        per_client.append(summary)

    shares = [x["overhead_share"] for x in per_round if x["overhead_share"] is not None]
    periods = commit_periods(os.path.dirname(os.path.abspath(path)), rounds_s)
    for p in periods:
        r = per_round[p["round"]]
        p["overhead_share_full"] = (r["overhead_seconds"] + p["outside_round_seconds"]) / p["period_seconds"]
    return {
        "path": path, "method": method, "num_clients": K, "num_ranks": int(attrs.get("num_ranks", 0) or 0),
        "rounds": rounds, "max_rank": R, "global_layers": Lg, "modules": modules,
        "checkpoint_seconds_last": float(ckpt) if ckpt is not None else None, "checkpoint_every": every,
        "checkpoint_seconds_per_round": ckpt_per_round, "index_bytes": index_bytes,
        "per_round": per_round,
        "commit_periods": periods,
        "overhead_share_median": statistics.median(shares) if shares else None,
        "overhead_share_total": float(np.sum(overhead) / np.sum(rounds_s)) if np.sum(rounds_s) > 0 else None,
        "clients": per_client,
    }


def fmt_bytes(x):
    if x is None:
        return "-"
    for unit, div in (("MB", 1e6), ("kB", 1e3)):
        if x >= div:
            return f"{x / div:.1f} {unit}"
    return f"{x:.0f} B"


def print_report(a):
    print(f"\n{a['path']}: method {a['method']}, {a['num_clients']} clients on {a['num_ranks']} ranks, "
          f"{a['rounds']} rounds, R {a['max_rank']}, L_g {a['global_layers']}, modules {','.join(a['modules'])}")
    print(f"{'round':>5s} {'round s':>9s} {'train+eval s':>13s} {'rank':>4s} {'overhead s':>11s} {'share':>7s} "
          f"{'aggregate ms':>13s}" + (f" {'+ckpt share':>11s}" if a["checkpoint_seconds_per_round"] is not None else ""))
    for r in a["per_round"]:
        agg = f"{r['aggregate_seconds'] * 1e3:13.3f}" if r["aggregate_seconds"] is not None else f"{'-':>13s}"
        line = (f"{r['round']:5d} {r['round_seconds']:9.3f} {r['critical_train_eval_seconds']:13.3f} "
                f"{r['busiest_rank']:4d} {r['overhead_seconds']:11.3f} {100 * r['overhead_share']:6.2f}% {agg}")
        if "overhead_share_with_checkpoint" in r:
            line += f" {100 * r['overhead_share_with_checkpoint']:10.2f}%"
        print(line)
    ck = a["checkpoint_seconds_last"]
    print(f"overhead share: median {100 * a['overhead_share_median']:.2f}%, all rounds "
          f"{100 * a['overhead_share_total']:.2f}%; checkpoint_seconds_last "
          + (f"{ck:.3f} s (every {a['checkpoint_every']} round(s))" if ck is not None else "not recorded in this file"))
    for p in a["commit_periods"]:
        print(f"round {p['round']}: {p['period_seconds']:.3f} s between checkpoint commits, "
              f"{p['outside_round_seconds']:.3f} s of it after round_seconds (HDF5, decisions, checkpoint); "
              f"overhead share of the full period {100 * p['overhead_share_full']:.2f}%")
    print(f"\n{'client':>6s} {'name':22s} {'r':>3s} {'L':>2s} {'up r0':>9s} {'up':>9s} {'down':>9s} {'up/ideal':>8s} "
          f"{'dn/ideal':>8s} {'r0/ideal':>8s} {'dense bank':>10s} {'FedIT A+B':>10s} {'up/FedIT':>8s}")
    for c in a["clients"]:
        fed = c["fedit_a_plus_b_bytes"]
        ratio = lambda key: f"{c[key]:8.4f}" if c.get(key) is not None else f"{'-':>8s}"  # noqa: E731
        print(f"{c['client']:6d} {c['name'][:22]:22s} {c['rank']:3d} {c['layers']:2d} {fmt_bytes(c['round0_up']):>9s} "
              f"{fmt_bytes(c['steady_up']):>9s} {fmt_bytes(c['steady_down']):>9s} {ratio('steady_up_over_ideal')} "
              f"{ratio('steady_down_over_ideal')} {ratio('round0_up_over_ideal')} {fmt_bytes(c['dense_bank_bytes']):>10s} "
              f"{fmt_bytes(fed):>10s} "
              + (f"{c['steady_up'] / fed:8.3f}" if fed and c["steady_up"] is not None else f"{'-':>8s}"))
    print(f"(up/down: median over rounds >= 1 in which the client took part; 'up r0': round 0, which also carries "
          f"the masks (int64); ideal: r_k^2 values per (layer, module) + relation (+ {a['index_bytes']}-byte mask "
          f"indices where masks travel))")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("paths", nargs="+", help="metrics.h5 files (or run directories holding one)")
    ap.add_argument("--models-dir", default=os.path.join(ROOT, "data", "models"),
                    help="where <model>/config.json lives for clients without model_dir")
    ap.add_argument("--index-bytes", type=int, default=4,
                    help="bytes per mask index in the ideal payload (4: int32; indices < R^2 <= 2^14 fit 2)")
    ap.add_argument("--json", help="write the analysis as JSON")
    args = ap.parse_args()
    results = []
    for p in args.paths:
        path = os.path.join(p, "metrics.h5") if os.path.isdir(p) else p
        a = analyse(path, args.models_dir, args.index_bytes)
        print_report(a)
        results.append(a)
    if args.json:
        d = os.path.dirname(args.json)
        if d:
            os.makedirs(d, exist_ok=True)
        with open(args.json, "w") as fh:
            json.dump({"tool": "round_overhead", "runs": results}, fh, indent=2, default=float)
            fh.write("\n")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
