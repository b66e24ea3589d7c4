#!/usr/bin/env python3
"""Writes the text seeds of tests/fuzz/corpus that are not copied from the repository: small
tokenizer.json documents covering each pipeline component, config.json files of every model
family, and COMMIT markers. Run once by hand when a format changes:
    python3 tests/fuzz/make_text_seeds.py tests/fuzz/corpus
"""
import json
import os
import sys


def byte_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def added(i, content, special=True, **flags):
    entry = {"id": i, "content": content, "single_word": False, "lstrip": False, "rstrip": False,
             "normalized": not special, "special": special}
    entry.update(flags)
    return entry


def doc(vocab, merges, added_tokens, **components):
    model = {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
             "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
             "vocab": vocab, "merges": merges}
    model.update(components.pop("model", {}))
    d = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added_tokens,
         "normalizer": None, "pre_tokenizer": None, "post_processor": None, "decoder": None, "model": model}
    d.update(components)
    return d


def byte_level_gpt2():
    b2u = byte_to_unicode()
    vocab = {b2u[b]: b for b in range(256)}
    merges = [["Ġ", "t"], ["h", "e"], ["Ġt", "he"], ["i", "n"], ["Ġ", "a"]]
    for left, right in merges:
        vocab[left + right] = len(vocab)
    n = len(vocab)
    return doc(vocab, merges, [added(n, "<|endoftext|>"), added(n + 1, "<think>", special=False)],
               pre_tokenizer={"type": "Sequence", "pretokenizers": [
                   {"type": "Split", "pattern": {"Regex": r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"},
                    "behavior": "Isolated", "invert": False},
                   {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]},
               post_processor={"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
               decoder={"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
               normalizer={"type": "NFC"})


def sentencepiece(byte_fallback):
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab["<0x%02X>" % b] = 3 + b
    for token in ["▁", "a", "b", "c", "▁a", "ab", "▁ab", "▁c"]:
        vocab[token] = len(vocab)
    return doc(vocab, [["▁", "a"], ["a", "b"], ["▁a", "b"], ["▁", "c"]],
               [added(0, "<unk>"), added(1, "<s>"), added(2, "</s>")],
               model={"unk_token": "<unk>", "fuse_unk": True, "byte_fallback": byte_fallback},
               normalizer={"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "▁"},
                                                              {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]},
               post_processor={"type": "TemplateProcessing",
                               "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                               "pair": [], "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
               decoder={"type": "Sequence", "decoders": [
                   {"type": "Replace", "pattern": {"String": "▁"}, "content": " "}, {"type": "ByteFallback"},
                   {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]})


def metaspace_words():
    vocab = {c: i for i, c in enumerate(["[UNK]", "▁", "a", "b", "1", "2", ".", "▁a", "ab", "A"])}
    return doc(vocab, ["▁ a", "a b"], [added(0, "[UNK]"), added(10, "[CLS]"), added(11, "[SEP]"),
                                       added(12, "<mask>", lstrip=True, rstrip=True, single_word=True)],
               model={"unk_token": "[UNK]", "ignore_merges": True},
               normalizer={"type": "Sequence", "normalizers": [{"type": "NFKD"}, {"type": "Lowercase"},
                                                              {"type": "Strip", "left": True, "right": True}]},
               pre_tokenizer={"type": "Sequence", "pretokenizers": [
                   {"type": "Digits", "individual_digits": True}, {"type": "Punctuation", "behavior": "Isolated"},
                   {"type": "WhitespaceSplit"},
                   {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": True}]},
               post_processor={"type": "BertProcessing", "sep": ["[SEP]", 11], "cls": ["[CLS]", 10]},
               decoder={"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": True})


def whitespace_bert():
    vocab = {c: i for i, c in enumerate(["<unk>", "a", "b", ",", "x", "ab"])}
    return doc(vocab, ["a b"], [added(6, "<s>"), added(7, "</s>")], model={"unk_token": "<unk>"},
               normalizer={"type": "NFD"},
               pre_tokenizer={"type": "Sequence", "pretokenizers": [
                   {"type": "BertPreTokenizer"}, {"type": "CharDelimiterSplit", "delimiter": "x"},
                   {"type": "Whitespace"},
                   {"type": "Split", "pattern": {"String": "ab"}, "behavior": "MergedWithNext", "invert": True}]},
               post_processor={"type": "Sequence", "processors": [
                   {"type": "RobertaProcessing", "sep": ["</s>", 7], "cls": ["<s>", 6], "trim_offsets": True,
                    "add_prefix_space": False}]})


def llama_config(model_type, **extra):
    c = {"architectures": ["LlamaForCausalLM"], "model_type": model_type, "vocab_size": 512, "hidden_size": 64,
         "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
         "max_position_embeddings": 256, "rope_theta": 10000.0, "rms_norm_eps": 1e-5, "initializer_range": 0.02,
         "tie_word_embeddings": True, "bos_token_id": 1, "eos_token_id": [2, 3], "pad_token_id": None,
         "rope_scaling": None, "torch_dtype": "bfloat16", "hidden_act": "silu"}
    c.update(extra)
    return c


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)


def main(root):
    tokenizers = {"byte_level_gpt2": byte_level_gpt2(), "sentencepiece_fallback": sentencepiece(True),
                  "sentencepiece_unk": sentencepiece(False), "metaspace_words": metaspace_words(),
                  "whitespace_bert": whitespace_bert()}
    for name, d in tokenizers.items():
        write(os.path.join(root, "tokenizer", name + ".json"), json.dumps(d, ensure_ascii=False))

    configs = {
        "llama": llama_config("llama", attention_bias=False, mlp_bias=True, head_dim=16),
        "llama3_rope": llama_config("llama", rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                                            "high_freq_factor": 4.0,
                                                            "original_max_position_embeddings": 8192}),
        "linear_rope": llama_config("llama", rope_scaling={"type": "linear", "factor": 2.0}, torch_dtype="float32"),
        "qwen2": llama_config("qwen2", architectures=["Qwen2ForCausalLM"], use_sliding_window=False,
                              sliding_window=4096, max_window_layers=2),
        "mistral": llama_config("mistral", architectures=["MistralForCausalLM"], sliding_window=None),
        "gemma": llama_config("gemma", architectures=["GemmaForCausalLM"], hidden_activation="gelu_pytorch_tanh",
                              head_dim=32, torch_dtype="float16"),
        "gemma2": llama_config("gemma2", architectures=["Gemma2ForCausalLM"], hidden_activation="gelu_pytorch_tanh",
                               query_pre_attn_scalar=16, attn_logit_softcapping=50.0, final_logit_softcapping=None,
                               sliding_window=128),
    }
    for name, c in configs.items():
        write(os.path.join(root, "llama_config", name + ".json"), json.dumps(c, indent=2) + "\n")

    write(os.path.join(root, "commit", "round_boundary"),
          "h2tune-checkpoint 1\nnext_round 3\nin_progress 0\nfile 1234 14695981039346656037 server.h5\n"
          "file 1000 99 client_0000.h5\nfile 5 7 metrics.h5\nend\n")
    write(os.path.join(root, "commit", "in_round"),
          "h2tune-checkpoint 1\nnext_round 12\nin_progress 1\nfile 0 14695981039346656037 clients/client 0001.h5\nend\n")
    write(os.path.join(root, "commit", "cut_short"), "h2tune-checkpoint 1\nnext_round 1\nin_progress 0\nfile 12 34 ser")


if __name__ == "__main__":
    main(sys.argv[1])
