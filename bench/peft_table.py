#!/usr/bin/python3
"""Markdown tables from one or more run_peft_bench.sh results (--out JSON files), e.g. one per model
when each model ran with its own batch:

  /usr/bin/python3 bench/peft_table.py bench/results/peft_smollm2-135m.json bench/results/peft_qwen2.5-0.5b.json

Prints: the summary (medians of the per-round medians, as run_peft_bench.sh), all rounds of a model
pooled (when several files hold it), the rounds in which both runs had the machine nearly to
themselves (other processes < 10 % of the CPU time, where the JSON records it), the rounds one by one
(ms/step, the ratio, peaks, load, and — where the JSON has them — the share of the machine's CPU
time that niced processes, and all other processes, took during each run), every step's time, and
memory. Only reads the files; every number is computed.
"""
import json
import statistics
import sys


QUIET = 0.10  # "quiet" rounds: other processes below this share of the CPU time in both runs


def per_round(side, key, i):
    """Round i's value of a per-round list that older result files may lack (None then)."""
    values = side.get(key)
    return values[i] if values else None


def fmt_share(x):
    return "—" if x is None else f"{100 * x:.0f} %"


def main(paths):
    rows = []
    for path in paths:
        with open(path) as f:
            res = json.load(f)
        for r in res["models"]:
            rows.append((path, res, r))

    print("| model | batch × seq | rounds × steps | h2tune tokens/s | PEFT tokens/s | h2tune / PEFT | "
          "GFLOP (useful) | h2tune GFLOP/s (% peak) | PEFT GFLOP/s (% peak) | PEFT executed GFLOP | "
          "step peak h2tune / PEFT MiB | loss₀ rel. diff |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for _, res, r in rows:
        h, p = r["h2tune"], r["peft"]
        steps = h["runs"][0]["steps"]
        hm, pm = h["memory_kib"] or {}, p["memory_kib"] or {}
        mem = (f"{hm['step_peak'] / 1024:.0f} / {pm['step_peak'] / 1024:.0f}"
               if hm.get("step_peak") and pm.get("step_peak") else "n/a")
        print(f"| {r['model']} | {r['batch']} × {r['seq']} | {res['rounds']} × {steps} | {h['tokens_per_s']:.1f} | "
              f"{p['tokens_per_s']:.1f} | **{r['speed_h2tune_over_peft']:.3f}×** | {h['flops_per_step'] / 1e9:.0f} | "
              f"{h['gflops_per_s']:.1f} ({100 * h['fraction_of_peak']:.1f} %) | "
              f"{p['useful_gflops_per_s']:.1f} ({100 * p['useful_fraction_of_peak']:.1f} %) | "
              f"{p['flops_per_step'] / 1e9:.0f} | {mem} | {r['first_loss_rel_diff']:.1e} |")

    # Several invocations of one model (same batch): all their rounds pooled.
    by_model = {}
    for _, res, r in rows:
        by_model.setdefault((r["model"], r["batch"], r["seq"]), []).append(r)
    pooled = {k: v for k, v in by_model.items() if len(v) > 1}
    if pooled:
        print()
        print("| model | invocations | rounds | h2tune ms/step (median of rounds) | PEFT ms/step | h2tune tokens/s | "
              "PEFT tokens/s | h2tune / PEFT | per-round h2tune / PEFT: median (min – max) | rounds with h2tune faster |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for (model, b, sq), rs in pooled.items():
            hm = [x for r in rs for x in r["h2tune"]["ms_per_round"]]
            pm = [x for r in rs for x in r["peft"]["ms_per_round"]]
            ratios = [x for r in rs for x in r["speed_per_round"]]
            hmed, pmed = statistics.median(hm), statistics.median(pm)
            tok = rs[0]["tokens"]
            print(f"| {model} ({b} × {sq}) | {len(rs)} | {len(hm)} | {hmed:.0f} | {pmed:.0f} | "
                  f"{tok / (hmed / 1e3):.1f} | {tok / (pmed / 1e3):.1f} | **{pmed / hmed:.3f}×** | "
                  f"{statistics.median(ratios):.3f} ({min(ratios):.3f} – {max(ratios):.3f}) | "
                  f"{sum(1 for x in ratios if x > 1)} of {len(ratios)} |")

    # Rounds in which both runs had the machine (nearly) to themselves, where the JSON can tell.
    quiet = []
    for _, res, r in rows:
        h, p = r["h2tune"], r["peft"]
        for i in range(res["rounds"]):
            oh = per_round(h, "other_cpu_share", i)
            opf = per_round(p, "other_cpu_share", i)
            if oh is not None and opf is not None and max(oh, opf) < QUIET:
                quiet.append((r, i, oh, opf))
    if quiet:
        print()
        print(f"Rounds in which other processes took < {100 * QUIET:.0f} % of the CPU time during both runs:")
        print()
        print("| model | round | h2tune ms/step | PEFT ms/step | h2tune / PEFT | h2tune GFLOP/s (% of own peak) | "
              "PEFT GFLOP/s useful (% peak) | PEFT GFLOP/s executed (% peak) | other processes h2tune / PEFT |")
        print("|---|---|---|---|---|---|---|---|---|")
        for r, i, oh, opf in quiet:
            h, p = r["h2tune"], r["peft"]
            hms, pms = h["ms_per_round"][i], p["ms_per_round"][i]
            hpk, ppk = h["peak_per_round"][i], p["peak_per_round"][i]
            hg = h["flops_per_step"] / (hms / 1e3) / 1e9
            pu = h["flops_per_step"] / (pms / 1e3) / 1e9
            pe = p["flops_per_step"] / (pms / 1e3) / 1e9
            print(f"| {r['model']} | {i + 1} | {hms:.0f} ({r['tokens'] / (hms / 1e3):.1f} tok/s) | "
                  f"{pms:.0f} ({r['tokens'] / (pms / 1e3):.1f} tok/s) | **{pms / hms:.3f}** | "
                  f"{hg:.1f} ({100 * hg / hpk:.1f} %) | {pu:.1f} ({100 * pu / ppk:.1f} %) | "
                  f"{pe:.1f} ({100 * pe / ppk:.1f} %) | {fmt_share(oh)} / {fmt_share(opf)} |")

    print()
    print("| model | round | h2tune ms/step | PEFT ms/step | h2tune / PEFT | peak GFLOP/s h2tune / PEFT | "
          "load (1 min) before h2tune / PEFT | niced CPU share h2tune / PEFT | other processes' CPU share h2tune / PEFT |")
    print("|---|---|---|---|---|---|---|---|---|")
    for _, res, r in rows:
        h, p = r["h2tune"], r["peft"]
        for i in range(res["rounds"]):
            lh, lp = h["load_before"][i], p["load_before"][i]
            nh = per_round(h, "nice_cpu_share", i)
            npf = per_round(p, "nice_cpu_share", i)
            oh = per_round(h, "other_cpu_share", i)
            opf = per_round(p, "other_cpu_share", i)
            print(f"| {r['model']} | {i + 1} | {h['ms_per_round'][i]:.0f} | {p['ms_per_round'][i]:.0f} | "
                  f"{r['speed_per_round'][i]:.3f} | {h['peak_per_round'][i]:.0f} / {p['peak_per_round'][i]:.0f} | "
                  f"{lh[0] if lh else float('nan'):.2f} / {lp[0] if lp else float('nan'):.2f} | "
                  f"{fmt_share(nh)} / {fmt_share(npf)} | {fmt_share(oh)} / {fmt_share(opf)} |")

    print()
    print("| model | h2tune steps, ms (all rounds) | PEFT steps, ms (all rounds) | fastest step h2tune / PEFT | ratio of fastest |")
    print("|---|---|---|---|---|")
    for _, res, r in rows:
        h, p = r["h2tune"], r["peft"]
        ha = [x for run in h["runs"] for x in run["ms"]["all"]]
        pa = [x for run in p["runs"] for x in run["ms"]["all"]]
        print(f"| {r['model']} | {', '.join(f'{x:.0f}' for x in ha)} | {', '.join(f'{x:.0f}' for x in pa)} | "
              f"{min(ha):.0f} / {min(pa):.0f} | {min(pa) / min(ha):.3f} |")

    print()
    print("| model | phases h2tune, ms (forward + loss / backward / clip + AdamW) | phases PEFT | "
          "RSS after set-up h2tune / PEFT MiB | process peak h2tune / PEFT MiB |")
    print("|---|---|---|---|---|")
    for _, res, r in rows:
        h, p = r["h2tune"], r["peft"]
        hp, pp = h["phase_ms"], p["phase_ms"]
        hm, pm = h["memory_kib"] or {}, p["memory_kib"] or {}

        def mib(m, k):
            return f"{m[k] / 1024:.0f}" if m.get(k) is not None else "n/a"
        print(f"| {r['model']} | {hp['forward']:.0f} / {hp['backward']:.0f} / {hp['optimizer']:.0f} | "
              f"{pp['forward']:.0f} / {pp['backward']:.0f} / {pp['optimizer']:.0f} | "
              f"{mib(hm, 'rss_loaded')} / {mib(pm, 'rss_loaded')} | {mib(hm, 'process_peak')} / {mib(pm, 'process_peak')} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
