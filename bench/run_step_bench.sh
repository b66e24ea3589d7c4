#!/usr/bin/env bash
# Side-by-side benchmark of one adapter training step: bench_step (C++, h2tune) and
# bench/torch_step.py (PyTorch), same threads, weights, adapters, batch and environment, in one
# invocation. Writes bench/results/step.json and prints the table. See bench/README.md.
#
#   bench/run_step_bench.sh [--threads N] [--presets "h2-tiny h2-small h2-base"] [--steps N]
#                           [--warmup N] [--rounds N] [--check] [--random] [--rank R]
#                           [--train-middle] [--attention hf|grouped] [--blas-threads N]
#                           [--head rows|full] [--build-dir DIR] [--out PATH]
#
# --rounds N alternates C++ and Python N times per preset (median of the per-round medians), which
# evens out a machine whose load drifts. --check first runs the correctness comparison
# (bench_step --check, torch_step.py --check) and fails if the two disagree. --head full times the
# LM head at every position (the formulation before), on both sides; default rows (response only).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
threads=$(nproc)
presets="h2-tiny h2-small h2-base"
steps=10
warmup=2
rounds=1
check=0
attention=hf
build="$root/build"
out="$root/bench/results/step.json"
common=()  # arguments that define the problem; bench_step exports them to torch_step.py
both=()    # arguments both tools take

usage() { sed -n '2,14p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
while [[ $# -gt 0 ]]; do
    case "$1" in
        --threads) threads=$2; shift 2 ;;
        --presets) presets=$2; shift 2 ;;
        --steps) steps=$2; shift 2 ;;
        --warmup) warmup=$2; shift 2 ;;
        --rounds) rounds=$2; shift 2 ;;
        --check) check=1; shift ;;
        --random) common+=(--random); shift ;;
        --train-middle) common+=(--train-middle); shift ;;
        --rank) common+=(--rank "$2"); shift 2 ;;
        --head) common+=(--head "$2"); shift 2 ;;
        --attention) attention=$2; shift 2 ;;
        --blas-threads) both+=(--blas-threads "$2"); shift 2 ;;
        --build-dir) build=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "run_step_bench.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
done

bin="$build/bench/bench_step"
py=/usr/bin/python3  # Debian's python3-torch; the python3 first on PATH may lack torch
if [[ ! -x "$bin" ]]; then
    echo "run_step_bench.sh: $bin not found; build it: cmake build && make -C build -j2 bench_step" >&2
    exit 2
fi
"$py" -c 'import torch' 2>/dev/null || { echo "run_step_bench.sh: $py cannot import torch" >&2; exit 2; }

# The environment h2tune itself runs in (src/main.cpp re-executes with it; both tools also do
# that on their own, this just makes it explicit and identical). Other knobs (OMP_NUM_THREADS,
# OPENBLAS_NUM_THREADS, ...) pass through unchanged to both and are recorded in the JSON.
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-passive}"

work="$(dirname "$out")/work"
rm -rf "$work"
mkdir -p "$work"

status=0
for preset in $presets; do
    if [[ $check -eq 1 ]]; then
        echo "== $preset: correctness check (threads $threads)"
        "$bin" --preset "$preset" --threads "$threads" "${both[@]}" --check --export-dir "$work/check" "${common[@]}" \
            --json "$work/$preset.check.cpp.json"
        if ! "$py" "$root/bench/torch_step.py" --preset "$preset" --threads "$threads" "${both[@]}" --check \
                --init-dir "$work/check" --attention "$attention" --json "$work/$preset.check.py.json"; then
            status=1
        fi
    fi
    for ((r = 1; r <= rounds; r++)); do
        echo "== $preset: round $r/$rounds, threads $threads, warm-up $warmup, steps $steps"
        "$bin" --preset "$preset" --threads "$threads" "${both[@]}" --warmup "$warmup" --steps "$steps" \
            --export-dir "$work/init" --json "$work/$preset.cpp.$r.json" "${common[@]}"
        "$py" "$root/bench/torch_step.py" --preset "$preset" --threads "$threads" "${both[@]}" --warmup "$warmup" \
            --steps "$steps" --init-dir "$work/init" --attention "$attention" --json "$work/$preset.py.$r.json"
    done
done

"$py" - "$work" "$out" "$threads" "$rounds" "$presets" <<'EOF'
import json, os, statistics, sys

work, out, threads, rounds, presets = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5].split()

def load(path):
    with open(path) as f:
        return json.load(f)

def med(xs):
    return statistics.median(xs) if xs else float("nan")

rows, meta = [], {}
for preset in presets:
    row = {"preset": preset}
    for impl in ("cpp", "py"):
        runs = [load(os.path.join(work, f"{preset}.{impl}.{r}.json")) for r in range(1, rounds + 1)]
        res = [run["results"][0] for run in runs]
        meta.setdefault(impl, {k: runs[0][k] for k in ("tool", "torch_version", "threads", "env")})
        ms = med([x["ms"]["median"] for x in res])
        peak = med([run["peak"]["best_gflops"] for run in runs if "peak" in run])
        fl = res[0]["flops"]["total"]
        row[impl] = {
            "ms_per_step": ms,
            "ms_per_round": [x["ms"]["median"] for x in res],
            "phase_ms": {k: med([x["phase_ms"][k] for x in res]) for k in ("forward", "backward", "optimizer")},
            "tokens_per_s": res[0]["tokens"] / (ms / 1e3),
            "flops_per_step": fl,
            "gflops_per_s": fl / (ms / 1e3) / 1e9,
            "peak_gflops": peak,
            "fraction_of_peak": fl / (ms / 1e3) / 1e9 / peak if peak == peak and peak > 0 else None,
            "first_loss": res[0]["first_loss"],
            "runs": res,
        }
        row.setdefault("tokens", res[0]["tokens"])
        row.setdefault("head", res[0].get("head"))
        row.setdefault("head_rows", res[0].get("head_rows"))
        row.setdefault("config", res[0]["config"])
    c, p = row["cpp"], row["py"]
    row["time_ratio_cpp_over_py"] = c["ms_per_step"] / p["ms_per_step"]
    row["first_loss_rel_diff"] = abs(c["first_loss"] - p["first_loss"]) / abs(p["first_loss"])
    if c["flops_per_step"] != p["flops_per_step"]:
        print(f"warning: {preset}: the two FLOP formulas disagree ({c['flops_per_step']} vs {p['flops_per_step']})")
    check_path = os.path.join(work, f"{preset}.check.py.json")
    if os.path.exists(check_path):
        row["check"] = load(check_path)["check"][0].get("compare")
    rows.append(row)

result = {"threads": threads, "rounds": rounds, "impls": meta, "presets": rows}
os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
with open(out, "w") as f:
    json.dump(result, f, indent=2)
    f.write("\n")

heads = sorted({str(r.get("head")) for r in rows})
print(f"\none training step (forward + backward + AdamW), LM head at {'/'.join(heads)} positions (rows = response only), threads {threads} "
      f"(OpenBLAS pool {meta['cpp']['env'].get('blas_threads')}), "
      f"OMP_WAIT_POLICY={meta['cpp']['env'].get('OMP_WAIT_POLICY')}, median of {rounds} round(s); "
      f"peak = best large fp32 matmul of the same process")
hdr = (f"{'preset':9s} {'tokens':>6s} {'C++ ms':>8s} {'Py ms':>8s} {'C++/Py':>7s} {'C++ tok/s':>10s} "
       f"{'Py tok/s':>9s} {'GFLOP':>7s} {'C++ GF/s':>9s} {'Py GF/s':>8s} {'peak C++/Py':>11s} {'C++ %pk':>7s} "
       f"{'Py %pk':>7s} {'loss diff':>9s}")
print(hdr)
print("-" * len(hdr))
for r in rows:
    c, p = r["cpp"], r["py"]
    pk = f"{c['peak_gflops']:.0f}/{p['peak_gflops']:.0f}"
    print(f"{r['preset']:9s} {r['tokens']:6d} {c['ms_per_step']:8.1f} {p['ms_per_step']:8.1f} "
          f"{r['time_ratio_cpp_over_py']:7.3f} {c['tokens_per_s']:10.0f} {p['tokens_per_s']:9.0f} "
          f"{c['flops_per_step'] / 1e9:7.2f} {c['gflops_per_s']:9.1f} {p['gflops_per_s']:8.1f} {pk:>11s} "
          f"{100 * (c['fraction_of_peak'] or 0):6.1f}% {100 * (p['fraction_of_peak'] or 0):6.1f}% "
          f"{r['first_loss_rel_diff']:9.1e}")
print("\nphases, ms (forward+loss | zero_grad+backward | clip+AdamW):")
for r in rows:
    c, p = r["cpp"]["phase_ms"], r["py"]["phase_ms"]
    print(f"{r['preset']:9s} C++ {c['forward']:8.1f} {c['backward']:8.1f} {c['optimizer']:7.1f}   "
          f"Py {p['forward']:8.1f} {p['backward']:8.1f} {p['optimizer']:7.1f}")
checks = [r for r in rows if r.get("check")]
if checks:
    print("\ncorrectness (--check):")
    for r in checks:
        k = r["check"]
        print(f"{r['preset']:9s} loss rel diff max {max(k['loss_rel']):.1e}, grad-norm rel max "
              f"{max(k['grad_norm_rel']):.1e}, adapters max|diff| {k.get('param_max_abs', float('nan')):.1e} "
              f"({k.get('param_max_abs_over_lr', float('nan')):.3f} lr) -> {'OK' if k['ok'] else 'MISMATCH'}")
print(f"\nC++/Py > 1: the C++ step is slower. wrote {out}")
EOF
exit $status
