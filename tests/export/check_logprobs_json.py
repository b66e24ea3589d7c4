#!/usr/bin/env python3
"""Checks a JSON file written by `h2tune eval --perplexity FILE --json OUT` (docs/export.md).

Always: the layout is complete; the windows cover every position 1..len(ids)-1 exactly once;
there is one finite log-probability <= 0 per scored token; total_logprob is their sum,
mean_nll = -total / tokens and perplexity = exp(mean_nll).
  --windows-at-least N   the text was scored in at least N windows
  --same-as OTHER        OTHER scores the same ids and its log-probs agree within --tolerance
  --differs-from OTHER   OTHER scores the same ids but some log-prob differs by more than 1e-6
Prints the measured numbers; exits 1 on any failed check. Standard library only.
"""
import argparse
import json
import math
import sys

REQUIRED = ["format", "text_file", "model_dir", "tokenizer", "adapter", "bos_id", "context", "stride",
            "windows", "ids", "logprobs", "tokens_scored", "total_logprob", "mean_nll", "perplexity"]


def load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def check_layout(doc, path):
    errors = []
    missing = [k for k in REQUIRED if k not in doc]
    if missing:
        return [f"{path}: missing keys {missing}"]
    ids, lp = doc["ids"], doc["logprobs"]
    if doc["format"] != "h2tune-token-logprobs-1":
        errors.append(f"format is {doc['format']!r}")
    if len(lp) != len(ids) - 1 or doc["tokens_scored"] != len(lp):
        errors.append(f"{len(ids)} ids but {len(lp)} log-probs (tokens_scored {doc['tokens_scored']})")
    if doc["bos_id"] is not None and ids[0] != doc["bos_id"]:
        errors.append(f"bos_id {doc['bos_id']} but the first id is {ids[0]}")
    scored = []
    for begin, end, score_from in doc["windows"]:
        if not (0 <= begin < score_from <= end <= len(ids)) or end - begin > doc["context"]:
            errors.append(f"bad window {[begin, end, score_from]} (context {doc['context']})")
        scored.extend(range(score_from, end))
    if scored != list(range(1, len(ids))):
        errors.append("the windows do not score positions 1..len(ids)-1 exactly once in order")
    bad = [v for v in lp if not (isinstance(v, float) or isinstance(v, int)) or not math.isfinite(v) or v > 0]
    if bad:
        errors.append(f"{len(bad)} log-probs are not finite values <= 0, e.g. {bad[:3]}")
    if errors:
        return [f"{path}: {e}" for e in errors]
    total = math.fsum(lp)
    mean_nll = -total / len(lp)
    checks = [("total_logprob", doc["total_logprob"], total), ("mean_nll", doc["mean_nll"], mean_nll),
              ("perplexity", doc["perplexity"], math.exp(doc["mean_nll"]))]
    for name, stored, recomputed in checks:
        rel = abs(stored - recomputed) / max(1.0, abs(recomputed))
        print(f"{path}: {name} {stored!r}, recomputed {recomputed!r} (relative difference {rel:.3g})")
        if rel > 1e-9:
            errors.append(f"{path}: {name} {stored!r} disagrees with the log-probs ({recomputed!r})")
    return errors


def max_abs_diff(a, b, path_a, path_b):
    if a["ids"] != b["ids"]:
        raise SystemExit(f"FAIL: {path_a} and {path_b} score different ids")
    return max(abs(x - y) for x, y in zip(a["logprobs"], b["logprobs"]))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("json")
    ap.add_argument("--windows-at-least", type=int, default=1)
    ap.add_argument("--same-as")
    ap.add_argument("--differs-from")
    ap.add_argument("--tolerance", type=float, default=1e-4)
    args = ap.parse_args()

    doc = load(args.json)
    errors = check_layout(doc, args.json)
    if not errors:
        print(f"{args.json}: {doc['tokens_scored']} tokens in {len(doc['windows'])} window(s), "
              f"mean NLL {doc['mean_nll']:.6f}, perplexity {doc['perplexity']:.4f}")
        if len(doc["windows"]) < args.windows_at_least:
            errors.append(f"{len(doc['windows'])} window(s), expected at least {args.windows_at_least}")
    if not errors and args.same_as:
        other = load(args.same_as)
        errors += check_layout(other, args.same_as)
        if not errors:
            d = max_abs_diff(doc, other, args.json, args.same_as)
            print(f"max abs log-prob difference to {args.same_as}: {d:.3e} (tolerance {args.tolerance:g})")
            if d > args.tolerance:
                errors.append(f"max abs log-prob difference {d:.3e} exceeds {args.tolerance:g}")
    if not errors and args.differs_from:
        other = load(args.differs_from)
        errors += check_layout(other, args.differs_from)
        if not errors:
            d = max_abs_diff(doc, other, args.json, args.differs_from)
            print(f"max abs log-prob difference to {args.differs_from}: {d:.3e} (must exceed 1e-6)")
            if d <= 1e-6:
                errors.append(f"log-probs equal those of {args.differs_from} (max abs difference {d:.3e})")
    for e in errors:
        print("FAIL:", e)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
