#!/usr/bin/env bash
# h2tune's client training step (bench_step) vs Hugging Face transformers + PEFT LoRA
# (bench/peft_step.py) at real model shapes: same random-weight fp32 checkpoint, same batch
# (bench_step --export-dir), same rank, same threads, each run in its own process, the two
# alternating (h2tune first in odd rounds, PEFT first in even ones). Prints the side-by-side table
# and writes JSON. See bench/README.md and docs/performance.md section (6).
#
#   bench/run_peft_bench.sh [--threads 2] [--rounds 3] [--steps 10] [--warmup 2]
#                           [--models "smollm2-135m qwen2.5-0.5b"] [--batch 16] [--seq 128] [--rank 16]
#                           [--build-dir DIR] [--models-dir DIR] [--python PATH] [--out PATH]
#                           [--mem gdb|none] [--wait-for "cc1plus"] [--wait-max MINUTES] [--blas-threads N]
#                           [--max-rss-gib G]
#
# --models-dir holds <model>/config.json + model.safetensors; a missing one is written with
# bench/make_random_checkpoint.py --dtype float32 (default bench/results/models). --python is the
# reference venv's interpreter (transformers + peft; default build/refenv/bin/python, made by
# scripts/setup_reference.sh). --mem gdb (default when gdb is installed) measures bench_step's step
# memory in one extra, untimed run per model under gdb (a breakpoint at the AdapterTrainer
# constructor reads VmRSS after set-up and resets the peak counter; VmHWM is read at exit);
# bench_step itself does not report memory. Before every run the script waits while a process
# named in --wait-for (default: the compiler, cc1plus) is running, polling every 60 s for up to
# --wait-max minutes (default 30), and records `uptime`, /proc/loadavg, MemAvailable and `top` in the
# results (a name that matches no process, e.g. --wait-for none, measures at once). --max-rss-gib G
# (default 0 = off): a watchdog samples the summed VmRSS of every run (and its children: gdb's
# inferior) once a second and kills the run above G GiB; the script then stops with exit code 3.
# The sampled peaks are in the JSON either way. During every run the machine's CPU time by kind
# (/proc/stat) and the run's own (/usr/bin/time) give the share other processes took
# (other_cpu_share; nice_cpu_share: those at a positive nice value). Work files go to
# <--out without .json>.work/. bench/peft_table.py turns one or more --out files into tables.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
threads=2
rounds=3
steps=10
warmup=2
models="smollm2-135m qwen2.5-0.5b"
batch=16
seq=128
rank=16
build="$root/build"
models_dir="$root/bench/results/models"
refpy="$root/build/refenv/bin/python"
out="$root/bench/results/peft_step.json"
mem=auto
wait_max=30
wait_for="cc1plus"
blas=()
max_rss_gib=0

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'; }
while [[ $# -gt 0 ]]; do
    case "$1" in
        --threads) threads=$2; shift 2 ;;
        --rounds) rounds=$2; shift 2 ;;
        --steps) steps=$2; shift 2 ;;
        --warmup) warmup=$2; shift 2 ;;
        --models) models=$2; shift 2 ;;
        --batch) batch=$2; shift 2 ;;
        --seq) seq=$2; shift 2 ;;
        --rank) rank=$2; shift 2 ;;
        --build-dir) build=$2; shift 2 ;;
        --models-dir) models_dir=$2; shift 2 ;;
        --python) refpy=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --mem) mem=$2; shift 2 ;;
        --wait-max) wait_max=$2; shift 2 ;;
        --wait-for) wait_for=$2; shift 2 ;;
        --blas-threads) blas=(--blas-threads "$2"); shift 2 ;;
        --max-rss-gib) max_rss_gib=$2; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "run_peft_bench.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
done

bin="$build/bench/bench_step"
if [[ ! -x "$bin" ]]; then
    echo "run_peft_bench.sh: $bin not found; build it: make -C $build bench_step" >&2
    exit 2
fi
"$refpy" -c 'import torch, transformers, peft' 2>/dev/null || {
    echo "run_peft_bench.sh: $refpy cannot import torch + transformers + peft (scripts/setup_reference.sh)" >&2
    exit 2
}
if [[ $mem == auto ]]; then
    if command -v gdb >/dev/null && gdb -q -batch -nx -ex 'python import gdb' >/dev/null 2>&1; then mem=gdb; else mem=none; fi
fi

export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-passive}"  # both tools also set it themselves
# On a shared machine, should memory run out, let the kernel pick these runs, not someone else's.
echo 1000 > /proc/self/oom_score_adj 2>/dev/null || true

work="${out%.json}.work"
rm -rf "$work"
mkdir -p "$work" "$models_dir"
loadlog="$work/load.log"
: > "$loadlog"
models_dir=$(cd "$models_dir" && pwd)

# Waits while a process named in --wait-for runs (another user's build on the shared cores), then
# records the load. Appends a JSON line {label, time, loadavg, mem_available_kib, waited_s, busy,
# top} to $work/load.jsonl.
count_busy() {
    local total=0 name n
    for name in $wait_for; do
        n=$(pgrep -c -x "$name" || true)
        total=$((total + ${n:-0}))
    done
    echo "$total"
}
note_load() {
    local label=$1 waited=0 n
    while n=$(count_busy); [[ $n -gt 0 ]]; do
        if (( waited >= wait_max * 60 )); then
            echo "   (still $n process(es) of '$wait_for' after ${wait_max} min; measuring anyway)"
            break
        fi
        echo "   waiting: $n process(es) of '$wait_for' running ($(cut -d' ' -f1-3 /proc/loadavg)), polling again in 60 s"
        sleep 60
        waited=$((waited + 60))
    done
    local la top avail up
    la=$(cat /proc/loadavg)
    up=$(uptime)
    avail=$(awk '/^MemAvailable:/ {print $2}' /proc/meminfo)
    top=$(top -bn1 | head -15)
    {
        echo "== $label  $(date -u +%FT%TZ)  loadavg $la  MemAvailable ${avail} kB  waited ${waited}s"
        echo "uptime: $up"
        echo "$top"
    } >> "$loadlog"
    /usr/bin/python3 - "$label" "$la" "$waited" "$(count_busy)" "$avail" "$top" "$up" >> "$work/load.jsonl" <<'EOF'
import json, sys, time
label, la, waited, busy, avail, top, up = sys.argv[1:8]
print(json.dumps({"label": label, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                  "loadavg": [float(x) for x in la.split()[:3]], "uptime": up.strip(),
                  "mem_available_kib": int(avail or 0),
                  "waited_s": int(waited), "busy": int(busy or 0), "top": top.splitlines()}))
EOF
    echo "   load before $label: $(cut -d' ' -f1-3 /proc/loadavg)"
}

common=(--threads "$threads" "${blas[@]}" --warmup "$warmup" --steps "$steps")

# Runs a command in the background and waits for it; with --max-rss-gib, samples the summed VmRSS of
# it and its descendants once a second and kills them all above the limit (then exits 3). Appends
# {label, sampled_peak_kib, killed, rc} to $work/rss.jsonl.
max_rss_kib=$(/usr/bin/python3 -c 'import sys; print(int(float(sys.argv[1]) * 1024 * 1024))' "$max_rss_gib")
tree_pids() {
    local c
    echo "$1"
    for c in $(pgrep -P "$1" 2>/dev/null || true); do tree_pids "$c"; done
}
cpu_jiffies() {  # the machine's cpu line of /proc/stat: user nice system idle iowait irq softirq steal
    local cpu u n sy id io irq sirq st rest
    read -r cpu u n sy id io irq sirq st rest < /proc/stat
    echo "$u $n $sy $id $io $irq $sirq $st"
}
guarded() {  # label command...
    local label=$1
    shift
    local c0 c1 t0 t1
    c0=$(cpu_jiffies)
    t0=$(date +%s.%N)
    rm -f "$work/$label.time"
    # /usr/bin/time -o: the run's own CPU time (user + system, children included) and its peak RSS
    # as the kernel counts it, so that the CPU time of everything else on the machine follows.
    if [[ -x /usr/bin/time ]]; then
        /usr/bin/time -o "$work/$label.time" -f "%e %U %S %M" "$@" &
    else
        "$@" &
    fi
    local pid=$! peak=0 killed=0 rc=0 pids rss p k v
    while kill -0 "$pid" 2>/dev/null; do
        pids=$(tree_pids "$pid")
        rss=0
        for p in $pids; do
            while read -r k v _; do
                [[ $k == VmRSS: ]] && rss=$((rss + v))
            done 2>/dev/null < "/proc/$p/status" || true
        done
        (( rss > peak )) && peak=$rss
        if (( max_rss_kib > 0 && rss > max_rss_kib )); then
            echo "   $label: resident $((rss / 1024)) MiB > --max-rss-gib $max_rss_gib; killing it"
            kill -KILL $pids 2>/dev/null || true
            killed=1
            break
        fi
        sleep 1
    done
    wait "$pid" || rc=$?
    c1=$(cpu_jiffies)
    t1=$(date +%s.%N)
    # CPU time of the whole machine during the run, by kind (USER_HZ ticks): the runs themselves are
    # nice 0 ("user"); builds and tests started at a positive nice value show up as "nice".
    # "other_share": the machine's busy CPU time not spent by the run itself (whatever its nice
    # value), as a share of all CPU time during the run.
    local cpu_json
    cpu_json=$(/usr/bin/python3 -c '
import json, os, sys
names = ["user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"]
a, b = [int(x) for x in sys.argv[1].split()], [int(x) for x in sys.argv[2].split()]
d = {k: y - x for k, x, y in zip(names, a, b)}
tot = sum(d.values()) or 1
hz = os.sysconf("SC_CLK_TCK")
out = {"wall_s": float(sys.argv[4]) - float(sys.argv[3]), "ticks": d,
       "nice_share": d["nice"] / tot, "idle_share": (d["idle"] + d["iowait"]) / tot}
try:
    e, u, s_, m = open(sys.argv[5]).read().split()[-4:]
    own = (float(u) + float(s_)) * hz
    busy = tot - d["idle"] - d["iowait"]
    out.update({"own_cpu_s": own / hz, "own_max_rss_kib": int(m),
                "other_share": max(0.0, busy - own) / tot})
except (OSError, ValueError):
    pass
print(json.dumps(out))' \
        "$c0" "$c1" "$t0" "$t1" "$work/$label.time")
    echo "{\"label\": \"$label\", \"sampled_peak_kib\": $peak, \"killed\": $killed, \"rc\": $rc, \"cpu\": $cpu_json}" >> "$work/rss.jsonl"
    if (( killed )); then
        echo "run_peft_bench.sh: $label exceeded the memory limit; use a smaller --batch/--seq" >&2
        exit 3
    fi
    return "$rc"
}

run_h2tune() {  # model round
    note_load "$1.h2tune.$2"
    guarded "$1.h2tune.$2" "$bin" --models-dir "$models_dir" --preset "$1" "${common[@]}" --batch "$batch" --seq "$seq" --rank "$rank" \
        --export-dir "$work/init" --json "$work/$1.h2tune.$2.json"
}
run_peft() {
    note_load "$1.peft.$2"
    guarded "$1.peft.$2" "$refpy" "$root/bench/peft_step.py" --model-dir "$models_dir/$1" --preset "$1" "${common[@]}" \
        --init "$work/init/$1.init.safetensors" --json "$work/$1.peft.$2.json"
}

# bench_step's memory: a breakpoint (that does not stop) at AdapterTrainer's constructor — after the
# model, adapters and batch are set up, before the first step — reads VmRSS and resets VmHWM; at
# exit_group VmHWM is read. Output: a JSON file like peft_step.py's "memory_kib".
cat > "$work/gdb_rss.py" <<'EOF'
import json, os
import gdb

out_path = os.environ["H2_MEM_OUT"]
state = {}

def status(pid):
    d = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                d[k] = int(v.split()[0])
    return d

class Mark(gdb.Breakpoint):
    def stop(self):
        if "loaded" not in state:
            pid = gdb.selected_inferior().pid
            state["loaded"] = status(pid)
            with open(f"/proc/{pid}/clear_refs", "w") as f:
                f.write("5")
        return False  # never stops the program

gdb.execute("set pagination off")
gdb.execute("set confirm off")
gdb.execute("set print thread-events off")
gdb.execute("set breakpoint pending on")
Mark("h2tune::AdapterTrainer::AdapterTrainer")
gdb.execute("catch syscall exit_group")
gdb.execute("run")
pid = gdb.selected_inferior().pid
if pid and "loaded" in state:
    final = status(pid)
    loaded = state["loaded"]
    mem = {"rss_loaded": loaded["VmRSS"], "hwm_load": loaded["VmHWM"], "hwm_steps": final["VmHWM"],
           "rss_after_steps": final["VmRSS"], "step_peak": final["VmHWM"] - loaded["VmRSS"],
           "process_peak": max(loaded["VmHWM"], final["VmHWM"])}
    with open(out_path, "w") as f:
        json.dump(mem, f)
gdb.execute("continue")
EOF

mem_h2tune() {  # model: one untimed bench_step run (warm-up 1, 1 step) under gdb
    note_load "$1.h2tune.mem"
    H2_MEM_OUT="$work/$1.h2tune.mem.json" guarded "$1.h2tune.mem" gdb -q -batch -nx -x "$work/gdb_rss.py" --args \
        "$bin" --models-dir "$models_dir" --preset "$1" --threads "$threads" "${blas[@]}" --warmup 1 --steps 1 \
        --batch "$batch" --seq "$seq" --rank "$rank" --export-dir "$work/init_mem" --json "$work/$1.h2tune.memrun.json" \
        > "$work/$1.h2tune.mem.log" 2>&1 || echo "   (gdb memory run failed; see $work/$1.h2tune.mem.log)"
    [[ -f "$work/$1.h2tune.mem.json" ]] && echo "   bench_step memory: $(cat "$work/$1.h2tune.mem.json")"
}

for m in $models; do
    if [[ ! -f "$models_dir/$m/config.json" ]]; then
        echo "== $m: writing a random-weight float32 checkpoint to $models_dir/$m"
        "$refpy" "$root/bench/make_random_checkpoint.py" "$models_dir/$m" --config "$m" --dtype float32
    fi
    dtype=$(/usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("torch_dtype"))' \
        "$models_dir/$m/config.json")
    if [[ $dtype != float32 ]]; then
        echo "run_peft_bench.sh: $models_dir/$m is $dtype; the comparison is float32 (remove it to regenerate)" >&2
        exit 2
    fi
done

for m in $models; do
    for ((r = 1; r <= rounds; r++)); do
        echo "== $m: round $r/$rounds, threads $threads, batch ${batch}x$seq, rank $rank, warm-up $warmup, steps $steps"
        if (( r % 2 == 1 )); then run_h2tune "$m" "$r"; run_peft "$m" "$r"
        else run_peft "$m" "$r"; run_h2tune "$m" "$r"; fi
    done
    if [[ $mem == gdb ]]; then mem_h2tune "$m"; fi
done

/usr/bin/python3 - "$work" "$out" "$threads" "$rounds" "$models" <<'EOF'
import json, os, statistics, sys

work, out, threads, rounds, models = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5].split()

def load(path):
    with open(path) as f:
        return json.load(f)

def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None

def by_label(name):
    """The records of work/NAME (one JSON object per line) by their "label"; {} when absent."""
    path = os.path.join(work, name)
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return {j["label"]: j for j in map(json.loads, f)}

loads = by_label("load.jsonl")
rss = by_label("rss.jsonl")

rows, meta = [], {}
for m in models:
    row = {"model": m}
    for side in ("h2tune", "peft"):
        runs = [load(os.path.join(work, f"{m}.{side}.{r}.json")) for r in range(1, rounds + 1)]
        res = [run["results"][0] for run in runs]
        meta.setdefault(side, {k: runs[0].get(k) for k in ("tool", "torch_version", "transformers_version",
                                                           "peft_version", "threads", "blas_threads", "env")})
        ms = med([x["ms"]["median"] for x in res])
        fl = res[0]["flops"]["total"]
        peaks = [run["peak"]["best_gflops"] for run in runs if "peak" in run]
        if side == "peft":
            mems = [x.get("memory_kib") or {} for x in res]
            mem = {k: med([mm.get(k) for mm in mems]) for k in ("rss_loaded", "hwm_load", "step_peak", "process_peak")}
        else:
            p = os.path.join(work, f"{m}.h2tune.mem.json")
            mem = load(p) if os.path.exists(p) else None
        row[side] = {
            "ms_per_step": ms,
            "ms_per_round": [x["ms"]["median"] for x in res],
            "phase_ms": {k: med([x["phase_ms"][k] for x in res]) for k in ("forward", "backward", "optimizer")},
            "tokens_per_s": res[0]["tokens"] / (ms / 1e3),
            "flops_per_step": fl,
            "flops": res[0]["flops"],
            "gflops_per_s": fl / (ms / 1e3) / 1e9,
            "peak_gflops": med(peaks),
            "peak_per_round": peaks,
            "fraction_of_peak": med([x["fraction_of_peak"] for x in res]),
            "first_loss": res[0]["first_loss"],
            "head_rows": res[0].get("head_rows"),
            "trainable_params": res[0].get("trainable_params"),
            "memory_kib": mem,
            "load_before": [loads.get(f"{m}.{side}.{r}", {}).get("loadavg") for r in range(1, rounds + 1)],
            "uptime_before": [loads.get(f"{m}.{side}.{r}", {}).get("uptime") for r in range(1, rounds + 1)],
            "sampled_rss_peak_kib": [rss.get(f"{m}.{side}.{r}", {}).get("sampled_peak_kib")
                                     for r in range(1, rounds + 1)],
            "nice_cpu_share": [rss.get(f"{m}.{side}.{r}", {}).get("cpu", {}).get("nice_share")
                               for r in range(1, rounds + 1)],
            "other_cpu_share": [rss.get(f"{m}.{side}.{r}", {}).get("cpu", {}).get("other_share")
                                for r in range(1, rounds + 1)],
            "runs": res,
        }
        row.setdefault("tokens", res[0]["tokens"])
        row.setdefault("batch", res[0]["batch"])
        row.setdefault("seq", res[0]["seq"])
        row.setdefault("rank", res[0]["rank"])
        row.setdefault("config", res[0]["config"])
    h, p = row["h2tune"], row["peft"]
    # The same useful work on both sides: bench_step's FLOP count of the h2tune step (LM head at the
    # response rows), divided by each side's step time; PEFT's own count (LM head at every position,
    # no r x r middle) is what it executes. Fractions of each process's own measured peak.
    useful = h["flops_per_step"]
    p["useful_flops_per_step"] = useful
    p["useful_gflops_per_s"] = useful / (p["ms_per_step"] / 1e3) / 1e9
    p["useful_fraction_of_peak"] = med([useful / (x["ms"]["median"] / 1e3) / 1e9 / pk
                                        for x, pk in zip(p["runs"], p["peak_per_round"])])
    h["useful_gflops_per_s"] = h["gflops_per_s"]
    h["useful_fraction_of_peak"] = h["fraction_of_peak"]
    # h2tune's r x r middle (2N r^2 forward + 2N r^2 backward per adapter) is in that count; its share:
    n_ad = 7 * row["config"]["num_hidden_layers"]
    row["middle_flops_share"] = n_ad * 4.0 * row["tokens"] * row["rank"] ** 2 / useful
    bh, bp = min(h["ms_per_round"]), min(p["ms_per_round"])  # the least disturbed round of each side
    row["best_round"] = {"h2tune_ms": bh, "peft_ms": bp, "speed_h2tune_over_peft": bp / bh,
                         "h2tune_tokens_per_s": res[0]["tokens"] / (bh / 1e3),
                         "peft_tokens_per_s": res[0]["tokens"] / (bp / 1e3)}
    if h.get("memory_kib") is not None and rss.get(f"{m}.h2tune.mem"):
        h["memory_kib"]["sampled_rss_peak_mem_run"] = rss[f"{m}.h2tune.mem"]["sampled_peak_kib"]
    row["speed_h2tune_over_peft"] = p["ms_per_step"] / h["ms_per_step"]  # = tokens/s ratio
    row["speed_per_round"] = [pm / hm for hm, pm in zip(h["ms_per_round"], p["ms_per_round"])]
    row["first_loss_rel_diff"] = abs(h["first_loss"] - p["first_loss"]) / abs(p["first_loss"])
    if h["memory_kib"] and p["memory_kib"] and h["memory_kib"].get("step_peak") and p["memory_kib"].get("step_peak"):
        row["step_memory_h2tune_over_peft"] = h["memory_kib"]["step_peak"] / p["memory_kib"]["step_peak"]
    rows.append(row)

load_all = [j["loadavg"][0] for j in loads.values()]
result = {"threads": threads, "rounds": rounds, "impls": meta, "models": rows,
          "load1_min_max": [min(load_all), max(load_all)] if load_all else None,
          "waited_s": sum(j["waited_s"] for j in loads.values()),
          "load": list(loads.values())}
os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
with open(out, "w") as f:
    json.dump(result, f, indent=2)
    f.write("\n")

def mib(mem, key):
    return f"{mem[key] / 1024:.0f}" if mem and mem.get(key) is not None else "n/a"

print(f"\none training step, h2tune (bench_step: LM head at the response rows, B(T+I)A) vs transformers "
      f"{meta['peft'].get('transformers_version')} + PEFT {meta['peft'].get('peft_version')} (eager attention, "
      f"logits at every position, BA), fp32, threads {threads} (OpenBLAS {meta['h2tune'].get('blas_threads')}/"
      f"{meta['peft'].get('blas_threads')}), median of {rounds} round(s); peak = best 2048^3 fp32 mm of each process")
hdr = (f"{'model':13s} {'batch':>6s} {'h2 ms':>8s} {'PEFT ms':>8s} {'h2 tok/s':>9s} {'PEFT tok/s':>10s} "
       f"{'h2/PEFT':>7s} {'GFLOP':>7s} {'h2 GF/s':>8s} {'PEFT GF/s':>9s} {'h2 %pk':>6s} {'PEFT %pk':>8s} "
       f"{'PEFT exec GFLOP':>15s} {'GF/s':>6s} {'%pk':>6s} {'h2 step MiB':>11s} {'PEFT step MiB':>13s} "
       f"{'loss0 diff':>10s}")
print(hdr)
print("-" * len(hdr))
for r in rows:
    h, p = r["h2tune"], r["peft"]
    print(f"{r['model']:13s} {str(r['batch']) + 'x' + str(r['seq']):>6s} {h['ms_per_step']:8.1f} "
          f"{p['ms_per_step']:8.1f} {h['tokens_per_s']:9.1f} {p['tokens_per_s']:10.1f} "
          f"{r['speed_h2tune_over_peft']:7.3f} {h['flops_per_step'] / 1e9:7.1f} {h['gflops_per_s']:8.1f} "
          f"{p['useful_gflops_per_s']:9.1f} {100 * h['fraction_of_peak']:5.1f}% "
          f"{100 * p['useful_fraction_of_peak']:7.1f}% {p['flops_per_step'] / 1e9:15.1f} {p['gflops_per_s']:6.1f} "
          f"{100 * p['fraction_of_peak']:5.1f}% "
          f"{mib(h['memory_kib'], 'step_peak'):>11s} {mib(p['memory_kib'], 'step_peak'):>13s} "
          f"{r['first_loss_rel_diff']:10.1e}")
print("GFLOP = bench_step's analytic count of the h2tune step (useful work, LM head at the response rows); "
      "GF/s and %pk of both sides use it (PEFT: that count / PEFT's step time). PEFT exec GFLOP: the same "
      "formula for what PEFT computes (logits at every position, no r x r middle). %pk: of each process's peak.")
print("\nper round (ms/step h2tune | PEFT, speed ratio), peak GFLOP/s h2tune | PEFT, load1 before h2tune | PEFT, "
      "share of the machine's CPU time taken by niced processes during the run h2tune | PEFT, and by all "
      "other processes (any nice value) h2tune | PEFT:")
def share(x):
    return f"{100 * x:4.1f}%" if x is not None else "  n/a"
for r in rows:
    h, p = r["h2tune"], r["peft"]
    for i in range(rounds):
        lh, lp = h["load_before"][i], p["load_before"][i]
        print(f"{r['model']:13s} round {i + 1}: {h['ms_per_round'][i]:8.1f} | {p['ms_per_round'][i]:8.1f}  "
              f"{r['speed_per_round'][i]:.3f}   peak {h['peak_per_round'][i]:.0f} | {p['peak_per_round'][i]:.0f}   "
              f"load {lh[0] if lh else float('nan'):.2f} | {lp[0] if lp else float('nan'):.2f}   "
              f"niced {share(h['nice_cpu_share'][i])} | {share(p['nice_cpu_share'][i])}   "
              f"others {share(h['other_cpu_share'][i])} | {share(p['other_cpu_share'][i])}")
    b = r["best_round"]
    print(f"{r['model']:13s} best round: {b['h2tune_ms']:8.1f} | {b['peft_ms']:8.1f}  {b['speed_h2tune_over_peft']:.3f}  "
          f"({b['h2tune_tokens_per_s']:.1f} | {b['peft_tokens_per_s']:.1f} tokens/s)")
print("\nphases, ms (forward+loss | zero_grad+backward | clip+AdamW); memory MiB (RSS after set-up, step peak "
      "above it, process peak):")
for r in rows:
    h, p = r["h2tune"], r["peft"]
    hp, pp = h["phase_ms"], p["phase_ms"]
    print(f"{r['model']:13s} h2tune {hp['forward']:8.1f} {hp['backward']:8.1f} {hp['optimizer']:7.1f}   "
          f"PEFT {pp['forward']:8.1f} {pp['backward']:8.1f} {pp['optimizer']:7.1f}   "
          f"mem h2tune {mib(h['memory_kib'], 'rss_loaded')}/{mib(h['memory_kib'], 'step_peak')}/"
          f"{mib(h['memory_kib'], 'process_peak')}  PEFT {mib(p['memory_kib'], 'rss_loaded')}/"
          f"{mib(p['memory_kib'], 'step_peak')}/{mib(p['memory_kib'], 'process_peak')}")
    hs = (h["memory_kib"] or {}).get("sampled_rss_peak_mem_run")
    ps = [x for x in p["sampled_rss_peak_kib"] if x]
    hts = [x for x in h["sampled_rss_peak_kib"] if x]
    print(f"{'':13s} watchdog's sampled process peak MiB: h2tune timed {'/'.join(f'{x / 1024:.0f}' for x in hts) or 'n/a'}"
          f", memory run (with gdb) {f'{hs / 1024:.0f}' if hs else 'n/a'}; PEFT {'/'.join(f'{x / 1024:.0f}' for x in ps) or 'n/a'}")
if load_all:
    print(f"\nload average (1 min) before the runs: {min(load_all):.2f} .. {max(load_all):.2f}; waited for "
          f"compilers {result['waited_s']} s in all; log: {os.path.join(work, 'load.log')}")
print(f"h2/PEFT > 1: h2tune's step is faster (tokens/s ratio). wrote {out}")
EOF
