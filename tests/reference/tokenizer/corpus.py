"""Deterministic corpus of varied strings for the tokenizer reference test.

`corpus()` returns the same list on every run and machine (a seeded random.Random, no hashing
order): hand-written cases for each hard area (prose, code, digit runs, whitespace runs with tabs,
newlines and CRLF, upper-case contractions, accents in NFC and NFD, CJK, emoji with ZWJ, Arabic,
control characters, special-token texts alone and embedded, added-token edge cases, the empty
string), then seeded mixtures of them up to at least 2,000 strings.
"""
import random
import unicodedata

PROSE = [
    "The quick brown fox jumps over the lazy dog.",
    "Federated fine-tuning lets each client keep its data; only adapter updates travel.",
    "It's a truth universally acknowledged, that a single man in possession of a good fortune must be in want of a wife.",
    "We'll see: they're sure you've got what I'd call a plan, but he'll say it isn't.",
    "I'M SURE YOU'RE RIGHT, BUT WE'VE BEEN HERE BEFORE AND THEY'LL SAY I'D LIED. DON'T!",
    "You'Re, We'Ve, He'S, She'D, It'Ll, I'M, They'RE.",
    "rock 'n' roll, 'quoted', ''double'', 'tis the season, o'clock, y'all's",
    "Dr. Smith (Ph.D.) said: \"Results vary -- see Fig. 3b & Table 2!\"",
    "Email me at someone@example.com or visit https://example.org/path?q=1&r=2#frag.",
    "Prices: $5.99, \u20ac12,50, \u00a3100, \u00a52000 and 15% off.",
    "Hello world's  3 apples!",
    "In 1969, 600 million people watched; by 2024 the figure was 12345678901234567890.",
]

CODE = [
    "def f(x):\n    return x ** 2 + 1  # square\n",
    "for (int i = 0; i < n; ++i) {\n\tsum += a[i] * b[i];\n}\n",
    "#include <vector>\nint main() { std::vector<int> v{1, 2, 3}; return v.size(); }",
    '{"key": [1, 2.5, true, null], "nested": {"a": "b"}}',
    "<html><body><table><tr><td>cell</td></tr></table><b>bold</b> <i>it</i></body></html>",
    "SELECT name, COUNT(*) FROM users WHERE age >= 18 GROUP BY name;",
    "x = [i for i in range(10) if i % 2 == 0]\nprint(f'{x!r:>10}')",
    "    indented    code\n        deeper\n\t\ttabbed\n",
    "if a&&b||!c { return a<<2 >> 1 ^ ~b; }",
    "var re = /^[a-z0-9_-]{3,16}$/gi; // regex",
    "<div class=\"x\"><span>text</span><img src=\"a.png\"/></div>",
    "$ ls -la | grep '\\.cpp$' > out.txt 2>&1",
]

DIGITS = [
    "0", "7", "42", "123", "1234", "12345", "123456", "1234567", "12345678901234567890123456789",
    "3.14159265358979", "1,000,000", "1 000 000", "-273.15", "+49 30 1234567", "2024-06-01T12:34:56Z",
    "v1.2.3-rc4", "0x1F4A9", "1e-10", "\u0661\u0662\u0663\u0664\u0665", "\uff11\uff12\uff13\uff14",
    "\u00bd \u00be \u2153 \u2460\u2461\u2462", "\u0969\u096a\u096b", "\u4e00\u4e8c\u4e09 \u2167",
    "a1b2c3d4", "x123456y", "007 agents", "99 bottles, 98 bottles",
]

WHITESPACE = [
    " ", "  ", "   ", " " * 8, " " * 17, " " * 40, "\t", "\t\t", "\t" * 5, "\t" * 33, "\n", "\n\n", "\n" * 3,
    "\n" * 31, "\n" * 32, "\n" * 45, "\r\n", "\r\n\r\n", "\r", "\r\r\n", " \n", "\n ", " \n ", "\t \n \t",
    "a  b", "a   b", "a \n b", "a\n\nb", "a\r\nb\r\nc", "a\tb\tc", "  leading", "trailing  ", "  both  ",
    "a\u00a0b", "a\u3000b", "a\u2009b", "a\u2028b", "a\u0085b", "x \t\n\r\x0b\x0cy", "\n\n\n\n\n\n\n\n\n\nend",
    "word\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\nword",
    "\t\t\tx\t\t\t\t\t\t", "line1\nline2\n\nline4\n\n\n", "   \n\n   \n",
]

ACCENTED_NFC = [
    "caf\u00e9", "na\u00efve r\u00e9sum\u00e9", "\u00c5ngstr\u00f6m", "Stra\u00dfe", "\u00e7a va? o\u00f9 \u00eates-vous",
    "Ti\u1ebfng Vi\u1ec7t c\u00f3 d\u1ea5u", "\u1e9b\u0323", "\u01d6\u01d8\u01da\u01dc", "\u00c9COLE \u00c9T\u00c9",
    "\ud55c\uad6d\uc5b4 \ud14d\uc2a4\ud2b8", "\u0100\u0101\u0102\u0103 \u0150\u0151", "ma\u00f1ana se\u00f1or",
    "\u1f00\u1f01\u1f02 \u03ac\u03ad\u03ae", "\u2126 \u212b \u212a", "\ufb01 \ufb02 \u2460 \u33a1 \u00bd",
    "e\u0301 a\u0308 o\u0302", "\u0041\u030a\u0301", "q\u0307\u0323", "\u0915\u093c",
]
ACCENTED_NFD = [unicodedata.normalize("NFD", s) for s in ACCENTED_NFC]

CJK = [
    "\u6771\u4eac\u306f\u65e5\u672c\u306e\u9996\u90fd\u3067\u3059\u3002",
    "\u5317\u4eac\u6b22\u8fce\u4f60\uff01\u4eca\u5929\u5929\u6c14\u5f88\u597d\u3002",
    "\uc11c\uc6b8\ud2b9\ubcc4\uc2dc\ub294 \ub300\ud55c\ubbfc\uad6d\uc758 \uc218\ub3c4\uc785\ub2c8\ub2e4.",
    "\u30ab\u30bf\u30ab\u30ca\u3068\u3072\u3089\u304c\u306a\u3068\u6f22\u5b57",
    "\u4e2d\u6587English\u6df7\u5408123\u6570\u5b57",
    "\u300c\u5f15\u7528\u300d\u3001\u300e\u4e8c\u91cd\u300f\u3002\uff08\u62ec\u5f27\uff09",
    "\u9f98\u9f49\u9750 \U0002000b\U0002a6b2",
]

EMOJI = [
    "\U0001f600", "\U0001f44d\U0001f3fd", "\U0001f1fa\U0001f1f8\U0001f1ef\U0001f1f5",
    "\U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466", "\u2764\ufe0f", "1\ufe0f\u20e3",
    "\U0001f3f3\ufe0f\u200d\U0001f308", "I \u2764\ufe0f NY \U0001f5fd!!", "\U0001f9d1\U0001f3ff\u200d\U0001f4bb coding",
    "\U0001f600\U0001f603\U0001f604\U0001f601\U0001f606", "\u2603 \u2614 \u263a \u2705",
]

SCRIPTS = [
    "\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645",
    "\u0627\u0644\u0633\u0644\u0627\u0645 \u0639\u0644\u064a\u0643\u0645 \u0648\u0631\u062d\u0645\u0629 \u0627\u0644\u0644\u0647",
    "\u0627\u0644\u0639\u0631\u0628\u064a\u0629\u064f \u0644\u064f\u063a\u064e\u0629\u064c \u062c\u0645\u064a\u0644\u0629",
    "\u05e9\u05dc\u05d5\u05dd \u05e2\u05d5\u05dc\u05dd",
    "\u0939\u093f\u0928\u094d\u0926\u0940 \u092d\u093e\u0937\u093e",
    "\u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35\u0e04\u0e23\u0e31\u0e1a",
    "\u0420\u0443\u0441\u0441\u043a\u0438\u0439 \u0442\u0435\u043a\u0441\u0442 \u0438 \u0415\u0401",
    "\u0395\u03bb\u03bb\u03b7\u03bd\u03b9\u03ba\u03ac \u039a\u0391\u039b\u0397\u039c\u0395\u03a1\u0391",
    "\u10e5\u10d0\u10e0\u10d7\u10e3\u10da\u10d8 \u0540\u0561\u0575\u0565\u0580\u0565\u0576",
    "\u1403\u14c4\u1483\u144e\u1450\u1466 \u13e3\u13b3\u13a9",
]

CONTROL = [
    "\x00", "a\x00b", "\x01\x02\x03", "bell\x07", "\x1b[31mred\x1b[0m", "del\x7f", "zero\u200bwidth",
    "join\u200dner", "\ufeffbom", "soft\u00adhyphen", "\u202eRTL override", "tab\x0bvt\x0cff", "\x1c\x1d\x1e\x1f",
    "\ufffd replacement", "\U000e0041 tag", "\ue000 private",
]

# Special-token and added-token texts of the four tokenizers.
SPECIAL_TEXTS = [
    "<|endoftext|>", "<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>", "<|start_header_id|>",
    "<|end_header_id|>", "<|reserved_special_token_0|>", "<|reserved_special_token_250|>", "<|im_start|>",
    "<|im_end|>", "<|fim_prefix|>", "<|fim_middle|>", "<|vision_pad|>", "<tool_call>", "</tool_call>",
    "<think>", "</think>", "<bos>", "<eos>", "<pad>", "<unk>", "<mask>", "[multimodal]", "<start_of_turn>",
    "<end_of_turn>", "<unused0>", "<unused42>", "<start_of_image>", "<image_soft_token>", "<table>", "</td>",
    "<s>", "</s>",
]

EDGE = [
    "", "a", "A", " a", "a ", "'", "''", "'s", "'S", "'\u017f", "'ll'", "x'd", "\u00a0", "\u2581", "\u2581\u2581",
    "\u2581\u2581\u2581\u2581", "\u2581hello", "hello\u2581world", " \u2581 ", "<|endoftext", "endoftext|>",
    "<|endoftext|", "<<|endoftext|>>", "<|endoftext|><|endoftext|>", "<|endoftext|> <|endoftext|>",
    "Hello<|endoftext|>world", "Hello <|endoftext|> world", "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
    "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>",
    "<start_of_turn>user\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\n4<end_of_turn>",
    "<think>\nreasoning here\n</think>\n\nanswer", "<bos><bos>", "text<eos>", "<unused12>x<unused13>",
    "a\nb\n\nc\n\n\nd", "\t<table>\t", "<b>bold</b><i>x</i>", "<tool_call>{\"name\": \"f\"}</tool_call>",
    "\n<|endoftext|>\n", " <|endoftext|> ", "\u2581<eos>\u2581", "<pad><pad><pad>", "<mask> fill",
]


def _long_strings():
    return [
        " ".join(PROSE) * 3,
        "\n".join(CODE),
        "".join(DIGITS),
        "word " * 300,
        "a" * 500,
        "\u6771" * 200,
        "\U0001f600" * 100,
        " " * 300 + "x",
        "\n" * 100 + "y",
        "-" * 120 + "\n" + "=" * 80,
    ]


def corpus(minimum=2500, seed=20240601):
    cases = []
    for group in (PROSE, CODE, DIGITS, WHITESPACE, ACCENTED_NFC, ACCENTED_NFD, CJK, EMOJI, SCRIPTS, CONTROL,
                  SPECIAL_TEXTS, EDGE):
        cases.extend(group)
    cases.extend(_long_strings())
    for text in SPECIAL_TEXTS:  # each special text alone, embedded and glued
        cases += [" " + text, text + " ", "x" + text + "y", "Hello " + text + " world.", text + "\n" + text,
                  text.upper(), text * 3]
    for text in PROSE + ACCENTED_NFC:  # upper / lower / NFD / NFKC variants
        cases += [text.upper(), text.lower(), unicodedata.normalize("NFKD", text), unicodedata.normalize("NFKC", text)]

    fragments = [s for s in cases if 0 < len(s) <= 200]
    rng = random.Random(seed)
    joiners = ["", " ", "  ", "\n", "\t", "\r\n", " \n", ", ", "'s ", "'LL ", "\u00a0", "\u2581"]
    while len(cases) < minimum:
        count = rng.randint(2, 5)
        parts = [rng.choice(fragments) for _ in range(count)]
        text = parts[0]
        for part in parts[1:]:
            text += rng.choice(joiners) + part
        if rng.random() < 0.2:
            text = unicodedata.normalize(rng.choice(["NFD", "NFC", "NFKD"]), text)
        if rng.random() < 0.1:
            text = text.upper()
        cases.append(text)
    # The order is part of the definition; duplicates are harmless but pointless.
    seen, unique = set(), []
    for text in cases:
        if text not in seen:
            seen.add(text)
            unique.append(text)
    while len(unique) < minimum:  # top up after de-duplication
        text = rng.choice(fragments) + rng.choice(joiners) + str(rng.randint(0, 10 ** rng.randint(1, 12)))
        if text not in seen:
            seen.add(text)
            unique.append(text)
    return unique


if __name__ == "__main__":
    texts = corpus()
    print(len(texts), "strings")
