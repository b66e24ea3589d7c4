#!/usr/bin/env python3
"""How learnable each built-in task is without a language model: the majority-class rate and a
multinomial naive Bayes classifier on the input's lower-cased words (binary counts, add-one
smoothing), trained on the first N training examples and scored on the whole test split.
A reference point for docs/models.md: it says what the inputs carry, not what a 1-7 M-parameter
decoder can extract from them in 200 LoRA steps.  Standard library only.

    python3 scripts/task_baselines.py [--tasks spam,wordnet,sotu,fortune] [--train-sizes 3200,0]
(training size 0 = the whole training split; 3200 = the examples 200 steps of batch 16 see)
"""
import argparse
import collections
import json
import math
import os
import re
import sys

WORD = re.compile(r"[a-z]+")


def load_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def words(text):
    return set(WORD.findall(text.lower()))


def naive_bayes_accuracy(train, test):
    label_count = collections.Counter(ex["output"] for ex in train)
    word_count = {label: collections.Counter() for label in label_count}
    vocabulary = set()
    for ex in train:
        ws = words(ex["input"])
        word_count[ex["output"]].update(ws)
        vocabulary |= ws
    total = {label: sum(c.values()) for label, c in word_count.items()}
    log_prior = {label: math.log(n / len(train)) for label, n in label_count.items()}

    def score(label, ws):
        denominator = total[label] + len(vocabulary)
        return log_prior[label] + sum(math.log((word_count[label][w] + 1) / denominator) for w in ws)

    # sorted labels: ties go to the same label on every run
    labels = sorted(label_count)
    correct = sum(max(labels, key=lambda lab: score(lab, words(ex["input"]))) == ex["output"] for ex in test)
    return correct / len(test)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default="spam,wordnet,sotu,fortune")
    parser.add_argument("--train-sizes", default="3200,0")
    parser.add_argument("--data", default=os.path.join(os.path.dirname(__file__), "..", "data", "tasks"))
    args = parser.parse_args()
    sizes = [int(s) for s in args.train_sizes.split(",")]
    print("| task | classes | test examples | majority | " +
          " | ".join(f"naive Bayes, {s or 'all'} train" for s in sizes) + " |")
    print("|---|---|---|---|" + "---|" * len(sizes))
    for task in args.tasks.split(","):
        train_path = os.path.join(args.data, task, "train.jsonl")
        test_path = os.path.join(args.data, task, "test.jsonl")
        if not (os.path.isfile(train_path) and os.path.isfile(test_path)):
            sys.exit(f"task_baselines.py: {train_path} or {test_path} is missing (run scripts/setup.sh)")
        train, test = load_jsonl(train_path), load_jsonl(test_path)
        majority = collections.Counter(ex["output"] for ex in test).most_common(1)[0][1] / len(test)
        accs = [naive_bayes_accuracy(train[:s] if s else train, test) for s in sizes]
        classes = len({ex["output"] for ex in train})
        print(f"| {task} | {classes} | {len(test)} | {majority:.3f} | " + " | ".join(f"{a:.3f}" for a in accs) + " |")


if __name__ == "__main__":
    main()
