#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "h2tune/core/error.h"
#include "h2tune/tokenizer/bpe_tokenizer.h"

using namespace h2tune;
using Kind = BpeTokenizer::PreTokenizer;
using Pieces = std::vector<std::string>;

namespace {

const Kind kAllKinds[] = {Kind::Gpt2, Kind::Llama3, Kind::Qwen2, Kind::Gpt2IsolatedDigits};

// Deterministic English-like text from a seeded RNG: common words mixed with made-up words built
// from syllables, so that there are far more distinct pairs than the small test vocabularies hold.
std::string synthetic_text(uint32_t seed, std::size_t sentences) {
    static const char* const words[] = {
        "the",   "model", "client",  "server",   "round",   "adapter", "rank",    "learning", "federated",
        "data",  "of",    "and",     "to",       "a",       "is",      "with",    "update",   "gradient",
        "loss",  "token", "weights", "training", "average", "local",   "global",  "it's",     "we've",
        "don't", "1024",  "3.14",    "epoch",    "batch",   "layer",   "matrix",  "low",      "heterogeneous"};
    static const char* const syllables[] = {"ka", "lo", "ter", "in", "an", "re", "mo", "di",
                                            "ne", "su", "pra", "ex", "on", "al", "ti", "ver"};
    std::mt19937 rng(seed);
    std::uniform_int_distribution<std::size_t> pick_word(0, sizeof(words) / sizeof(words[0]) - 1);
    std::uniform_int_distribution<std::size_t> pick_syllable(0, sizeof(syllables) / sizeof(syllables[0]) - 1);
    std::uniform_int_distribution<int> length(4, 14);
    std::uniform_int_distribution<int> percent(0, 99);
    auto made_up_word = [&] {
        std::string word;
        for (int n = 1 + percent(rng) % 4; n > 0; --n) word += syllables[pick_syllable(rng)];
        return word;
    };
    std::string text;
    for (std::size_t s = 0; s < sentences; ++s) {
        const int n = length(rng);
        for (int w = 0; w < n; ++w) {
            std::string word = percent(rng) < 60 ? std::string(words[pick_word(rng)]) : made_up_word();
            if (w == 0) word[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(word[0])));
            text += (w ? " " : "") + word;
        }
        text += (s % 7 == 6) ? ".\n\n" : ". ";
    }
    return text;
}

const BpeTokenizer& trained_tokenizer() {
    static const BpeTokenizer tokenizer = [] {
        BpeTrainOptions options;
        options.vocab_size = 600;
        return bpe_train({synthetic_text(1, 3000)}, options);
    }();
    return tokenizer;
}

std::unordered_map<std::string, int32_t> byte_vocab() {
    std::unordered_map<std::string, int32_t> vocab;
    for (int b = 0; b < 256; ++b) vocab.emplace(BpeTokenizer::byte_to_unicode()[b], b);
    return vocab;
}

// A tokenizer over bytes plus the listed merges, whose results get ids 256, 257, ... in order.
BpeTokenizer tokenizer_with_merges(const std::vector<std::pair<std::string, std::string>>& merges,
                                   bool ignore_merges = false) {
    auto vocab = byte_vocab();
    for (const auto& [left, right] : merges) vocab.emplace(left + right, static_cast<int32_t>(vocab.size()));
    BpeTokenizer tokenizer = BpeTokenizer::from_parts(vocab, merges, {"<|endoftext|>"});
    if (!ignore_merges) return tokenizer;
    nlohmann::json doc = nlohmann::json::parse(tokenizer.to_json());
    doc["model"]["ignore_merges"] = true;
    return BpeTokenizer::from_json(doc.dump());
}

std::string random_bytes(std::mt19937& rng, std::size_t size) {
    std::uniform_int_distribution<int> byte(0, 255);
    std::string out(size, '\0');
    for (char& c : out) c = static_cast<char>(byte(rng));
    return out;
}

std::string join(const Pieces& pieces) {
    std::string out;
    for (const std::string& piece : pieces) out += piece;
    return out;
}

// The exception message thrown by `from_json(text, source)`, or "" if none.
std::string load_error(const std::string& text, const std::string& source = "bad.json") {
    try {
        BpeTokenizer::from_json(text, source);
    } catch (const ModelError& e) {
        return e.what();
    }
    return "";
}

nlohmann::json trained_json() { return nlohmann::json::parse(trained_tokenizer().to_json()); }

const std::vector<std::string> kSamples = {
    "",
    "Hello world's  3 apples!",
    "The federated clients don't share data; they've only 12345 updates.\n\n  Indented line\r\n\tTabbed",
    "naïve café résumé — Ångström, Æsir, façade",
    "東京は日本の首都です。北京欢迎你！서울특별시",
    "Emoji: 😀👍🏽🇺🇸 and ❤️ family 👨‍👩‍👧",
    "Русский текст и ελληνικά και עברית ومرحبا بالعالم हिन्दी",
    "<|endoftext|> is not special here <|pad|>",
    "invalid \xff\xfe utf8 \xc3 truncated \xe2\x82 and overlong \xc0\xaf and surrogate \xed\xa0\x80",
    std::string("nul\0byte", 8),
    "                trailing spaces and \u00a0nbsp\u3000ideographic   ",
};

}  // namespace

// ---------------------------------------------------------------- byte-level map

TEST(ByteToUnicode, IsGpt2Map) {
    const auto& map = BpeTokenizer::byte_to_unicode();
    ASSERT_EQ(map.size(), 256u);
    EXPECT_EQ(map['!'], "!");
    EXPECT_EQ(map['a'], "a");
    EXPECT_EQ(map[0], "\u0100");     // Ā
    EXPECT_EQ(map[' '], "\u0120");   // Ġ
    EXPECT_EQ(map['\n'], "\u010A");  // Ċ
    EXPECT_EQ(map[0xAD], "\u0143");  // soft hyphen, the last unprintable byte
    EXPECT_EQ(map[0xE9], "\u00E9");
    EXPECT_EQ(std::set<std::string>(map.begin(), map.end()).size(), 256u);
}

// ---------------------------------------------------------------- pre-tokenizers

TEST(PreTokenize, Gpt2HandChecked) {
    EXPECT_EQ(BpeTokenizer::pre_tokenize("Hello world's  3 apples!", Kind::Gpt2),
              (Pieces{"Hello", " world", "'s", " ", " 3", " apples", "!"}));
    EXPECT_EQ(BpeTokenizer::pre_tokenize("I'M don't 12345abc", Kind::Gpt2),
              (Pieces{"I", "'", "M", " don", "'t", " 12345", "abc"}));
    EXPECT_EQ(BpeTokenizer::pre_tokenize("a\n\n  b  ", Kind::Gpt2), (Pieces{"a", "\n\n ", " b", "  "}));
    EXPECT_EQ(BpeTokenizer::pre_tokenize(" !? x\tz", Kind::Gpt2), (Pieces{" !?", " x", "\t", "z"}));
}

TEST(PreTokenize, Llama3HandChecked) {
    EXPECT_EQ(BpeTokenizer::pre_tokenize("Hello world's  12345 apples!!\n\n  x", Kind::Llama3),
              (Pieces{"Hello", " world", "'s", " ", " ", "123", "45", " apples", "!!\n\n", " ", " x"}));
    // One non-letter may prefix a word (".b"); a space before punctuation goes with the punctuation.
    EXPECT_EQ(BpeTokenizer::pre_tokenize("I'M (hi) a.b\n\n  c", Kind::Llama3),
              (Pieces{"I", "'M", " (", "hi", ")", " a", ".b", "\n\n", " ", " c"}));
    EXPECT_EQ(BpeTokenizer::pre_tokenize("1234567 x1y", Kind::Llama3), (Pieces{"123", "456", "7", " x", "1", "y"}));
}

TEST(PreTokenize, Qwen2AndIsolatedDigits) {
    EXPECT_EQ(BpeTokenizer::pre_tokenize("v 2024!", Kind::Qwen2), (Pieces{"v", " ", "2", "0", "2", "4", "!"}));
    // Digits first, then the GPT-2 regex on "a " and "b c": the space before a digit stays alone.
    EXPECT_EQ(BpeTokenizer::pre_tokenize("a 12b c", Kind::Gpt2IsolatedDigits),
              (Pieces{"a", " ", "1", "2", "b", " c"}));
}

TEST(PreTokenize, NonAsciiClasses) {
    EXPECT_EQ(BpeTokenizer::pre_tokenize("naïve café 東京２０", Kind::Gpt2),
              (Pieces{"naïve", " café", " 東京", "２０"}));
    // U+00A0 and U+3000 are whitespace; emoji and em dash are neither letters nor numbers.
    EXPECT_EQ(BpeTokenizer::pre_tokenize("a\u00a0b\u3000c —😀x", Kind::Gpt2),
              (Pieces{"a", "\u00a0", "b", "\u3000", "c", " —😀", "x"}));
}

TEST(PreTokenize, InvalidUtf8BytesAreOtherSymbols) {
    const std::string text = "ab\xff\xfe" "cd \x80x";
    EXPECT_EQ(BpeTokenizer::pre_tokenize(text, Kind::Gpt2), (Pieces{"ab", "\xff\xfe", "cd", " \x80", "x"}));
    EXPECT_EQ(BpeTokenizer::pre_tokenize(text, Kind::Llama3), (Pieces{"ab", "\xff\xfe", "cd", " \x80", "x"}));
    // Llama 3 lets one "other" character prefix a word, an invalid byte included.
    EXPECT_EQ(BpeTokenizer::pre_tokenize("ab\xfe" "cd", Kind::Llama3), (Pieces{"ab", "\xfe" "cd"}));
}

TEST(PreTokenize, PiecesCoverRandomBytes) {
    std::mt19937 rng(42);
    for (int trial = 0; trial < 200; ++trial) {
        const std::string text = random_bytes(rng, 1 + trial * 5);
        for (Kind kind : kAllKinds) {
            const Pieces pieces = BpeTokenizer::pre_tokenize(text, kind);
            for (const std::string& piece : pieces) ASSERT_FALSE(piece.empty());
            ASSERT_EQ(join(pieces), text);
        }
    }
}

// ---------------------------------------------------------------- merges

TEST(Merges, HandCheckedIds) {
    // Ids: bytes 0..255, then "ll" 256, "he" 257, "llo" 258, "hello" 259; "<|endoftext|>" 260.
    const BpeTokenizer tokenizer = tokenizer_with_merges({{"l", "l"}, {"h", "e"}, {"ll", "o"}, {"he", "llo"}});
    EXPECT_EQ(tokenizer.vocab_size(), 261);
    EXPECT_EQ(tokenizer.encode("hello"), (std::vector<int32_t>{259}));
    EXPECT_EQ(tokenizer.encode("hell"), (std::vector<int32_t>{257, 256}));
    EXPECT_EQ(tokenizer.encode("yellow"), (std::vector<int32_t>{'y', 'e', 258, 'w'}));
    // " hello" is one GPT-2 piece "Ġhello"; no merge involves Ġ.
    EXPECT_EQ(tokenizer.encode("hello hello"), (std::vector<int32_t>{259, ' ', 259}));
    EXPECT_EQ(tokenizer.token_string(258), "llo");
    EXPECT_EQ(tokenizer.token_id("hello"), 259);
    EXPECT_EQ(tokenizer.token_id("nope"), -1);
}

TEST(Merges, LowerRankWinsOverPosition) {
    // "abc": (b,c) has the better rank, so it merges first even though (a,b) is further left.
    const BpeTokenizer bc_first = tokenizer_with_merges({{"b", "c"}, {"a", "b"}});
    EXPECT_EQ(bc_first.encode("abc"), (std::vector<int32_t>{'a', 256}));
    const BpeTokenizer ab_first = tokenizer_with_merges({{"a", "b"}, {"b", "c"}});
    EXPECT_EQ(ab_first.encode("abc"), (std::vector<int32_t>{256, 'c'}));
    // Equal pairs merge left to right.
    const BpeTokenizer aa = tokenizer_with_merges({{"a", "a"}});
    EXPECT_EQ(aa.encode("aaaaa"), (std::vector<int32_t>{256, 256, 'a'}));
}

TEST(Merges, IgnoreMergesUsesWholeWordFromVocab) {
    // "abc" is in the vocabulary, but the merges build "ab" + "c" only... unless ignore_merges.
    const std::vector<std::pair<std::string, std::string>> merges = {{"a", "b"}, {"b", "c"}, {"a", "bc"}};
    // ids: ab 256, bc 257, abc 258.
    EXPECT_EQ(tokenizer_with_merges(merges, false).encode("abc"), (std::vector<int32_t>{256, 'c'}));
    EXPECT_EQ(tokenizer_with_merges(merges, true).encode("abc"), (std::vector<int32_t>{258}));
}

// ---------------------------------------------------------------- round trips

TEST(RoundTrip, SamplesAllPreTokenizers) {
    const BpeTokenizer& trained = trained_tokenizer();
    const auto json = trained_json();
    std::vector<std::pair<std::string, std::string>> merges;
    for (const auto& merge : json["model"]["merges"]) {
        const std::string text = merge.get<std::string>();
        merges.emplace_back(text.substr(0, text.find(' ')), text.substr(text.find(' ') + 1));
    }
    for (Kind kind : kAllKinds) {
        const auto vocab = json["model"]["vocab"].get<std::unordered_map<std::string, int32_t>>();
        const BpeTokenizer tokenizer = BpeTokenizer::from_parts(vocab, merges, {"<|endoftext|>"}, kind);
        for (const std::string& sample : kSamples) {
            EXPECT_EQ(tokenizer.decode(tokenizer.encode(sample)), sample) << "kind " << static_cast<int>(kind);
        }
    }
    for (const std::string& sample : kSamples) EXPECT_EQ(trained.decode(trained.encode(sample)), sample);
}

TEST(RoundTrip, RandomByteStrings) {
    const BpeTokenizer& tokenizer = trained_tokenizer();
    std::mt19937 rng(7);
    for (int trial = 0; trial < 300; ++trial) {
        const std::string text = random_bytes(rng, static_cast<std::size_t>(trial) * 3);
        ASSERT_EQ(tokenizer.decode(tokenizer.encode(text)), text) << "trial " << trial;
    }
    // Long runs exercise the heap-based merge on uncached pieces.
    const std::string long_word(5000, 'e');
    EXPECT_EQ(tokenizer.decode(tokenizer.encode(long_word)), long_word);
}

TEST(RoundTrip, EncodesEveryIdInRange) {
    const BpeTokenizer& tokenizer = trained_tokenizer();
    for (int32_t id : tokenizer.encode(kSamples[5] + kSamples[8])) {
        EXPECT_GE(id, 0);
        EXPECT_LT(id, tokenizer.vocab_size());
    }
    EXPECT_THROW(tokenizer.decode({tokenizer.vocab_size()}), ModelError);
    EXPECT_THROW(tokenizer.decode({-1}), ModelError);
    EXPECT_THROW(tokenizer.token_string(-1), ModelError);
    EXPECT_THROW(BpeTokenizer().encode("x"), ModelError);
}

TEST(RoundTrip, ConcurrentEncodesAgree) {
    // The word cache is shared; concurrent const calls must give the single-threaded answer.
    const BpeTokenizer tokenizer = trained_tokenizer();  // a copy starts with an empty cache
    const std::string text = synthetic_text(5, 400) + kSamples[4] + kSamples[8];
    const std::vector<int32_t> expected = trained_tokenizer().encode(text);
    std::vector<std::vector<int32_t>> results(4);
    std::vector<std::thread> threads;
    for (auto& result : results) {
        threads.emplace_back([&tokenizer, &text, &result] {
            for (int repeat = 0; repeat < 5; ++repeat) result = tokenizer.encode(text);
        });
    }
    for (std::thread& thread : threads) thread.join();
    for (const auto& result : results) EXPECT_EQ(result, expected);
}

TEST(SpecialTokens, NotInterpretedInText) {
    const BpeTokenizer& tokenizer = trained_tokenizer();
    const int32_t eos = tokenizer.eos_id();
    ASSERT_GE(eos, 0);
    const std::string text = "before<|endoftext|>after <|pad|>";
    const std::vector<int32_t> ids = tokenizer.encode(text);
    EXPECT_EQ(std::count(ids.begin(), ids.end(), eos), 0);
    EXPECT_EQ(std::count(ids.begin(), ids.end(), tokenizer.pad_id()), 0);
    EXPECT_EQ(tokenizer.decode(ids), text);
    EXPECT_EQ(tokenizer.decode({eos}), "<|endoftext|>");
    std::vector<int32_t> with_eos = ids;
    with_eos.push_back(eos);
    EXPECT_EQ(tokenizer.decode(with_eos), text + "<|endoftext|>");
}

TEST(SpecialTokens, DetectionRules) {
    // Trained: <|endoftext|> is eos and bos, <|pad|> is pad; specials follow the vocabulary.
    const BpeTokenizer& trained = trained_tokenizer();
    EXPECT_EQ(trained.vocab_size(), 600);
    EXPECT_EQ(trained.token_id("<|endoftext|>"), 598);
    EXPECT_EQ(trained.eos_id(), 598);
    EXPECT_EQ(trained.bos_id(), 598);
    EXPECT_EQ(trained.pad_id(), 599);

    // Llama 3 names; no pad token, so pad falls back to eos.
    const BpeTokenizer llama =
        BpeTokenizer::from_parts(byte_vocab(), {}, {"<|begin_of_text|>", "<|end_of_text|>"}, Kind::Llama3);
    EXPECT_EQ(llama.bos_id(), 256);
    EXPECT_EQ(llama.eos_id(), 257);
    EXPECT_EQ(llama.pad_id(), 257);

    EXPECT_THROW(BpeTokenizer::from_parts(byte_vocab(), {}, {"<|x|>", "<|x|>"}), ModelError);

    const BpeTokenizer none = BpeTokenizer::from_parts(byte_vocab(), {}, {});
    EXPECT_EQ(none.bos_id(), -1);
    EXPECT_EQ(none.eos_id(), -1);
    EXPECT_EQ(none.pad_id(), -1);
}

// ---------------------------------------------------------------- tokenizer.json

TEST(TokenizerJson, WriteReadRoundTrip) {
    const BpeTokenizer& original = trained_tokenizer();
    const std::string text = original.to_json();
    const BpeTokenizer reread = BpeTokenizer::from_json(text, "roundtrip.json");
    EXPECT_EQ(reread.to_json(), text);
    EXPECT_EQ(reread.vocab_size(), original.vocab_size());
    EXPECT_EQ(reread.eos_id(), original.eos_id());
    for (const std::string& sample : kSamples) EXPECT_EQ(reread.encode(sample), original.encode(sample));

    // Hugging Face layout: version, ByteLevel pre-tokenizer/decoder, merges in "a b" form.
    const auto doc = nlohmann::json::parse(text);
    EXPECT_EQ(doc["version"], "1.0");
    EXPECT_EQ(doc["model"]["type"], "BPE");
    EXPECT_EQ(doc["pre_tokenizer"]["type"], "ByteLevel");
    EXPECT_EQ(doc["decoder"]["type"], "ByteLevel");
    EXPECT_TRUE(doc["model"]["merges"][0].is_string());
    EXPECT_EQ(doc["added_tokens"][0]["content"], "<|endoftext|>");
    EXPECT_EQ(doc["added_tokens"][0]["special"], true);
}

TEST(TokenizerJson, SaveAndLoadFile) {
    const std::string path = ::testing::TempDir() + "h2tune_tokenizer_test.json";
    trained_tokenizer().save(path);
    const BpeTokenizer loaded = BpeTokenizer::from_file(path);
    EXPECT_EQ(loaded.to_json(), trained_tokenizer().to_json());
    std::remove(path.c_str());
    EXPECT_THROW(BpeTokenizer::from_file(path), ModelError);
}

TEST(TokenizerJson, EveryPreTokenizerRoundTrips) {
    for (Kind kind : kAllKinds) {
        const BpeTokenizer tokenizer = BpeTokenizer::from_parts(byte_vocab(), {}, {"<|endoftext|>"}, kind);
        const std::string text = tokenizer.to_json();
        const BpeTokenizer reread = BpeTokenizer::from_json(text);
        EXPECT_EQ(reread.to_json(), text);
        EXPECT_EQ(reread.encode("ab 12345  x\n\ny"), tokenizer.encode("ab 12345  x\n\ny"));
    }
}

TEST(TokenizerJson, MergesInStringAndArrayForm) {
    auto doc = trained_json();
    nlohmann::json arrays = nlohmann::json::array();
    for (const auto& merge : doc["model"]["merges"]) {
        const std::string text = merge.get<std::string>();
        const auto space = text.find(' ');
        arrays.push_back({text.substr(0, space), text.substr(space + 1)});
    }
    doc["model"]["merges"] = arrays;
    const BpeTokenizer from_arrays = BpeTokenizer::from_json(doc.dump(), "arrays.json");
    EXPECT_EQ(from_arrays.to_json(), trained_tokenizer().to_json());  // written back in string form
    for (const std::string& sample : kSamples) EXPECT_EQ(from_arrays.encode(sample), trained_tokenizer().encode(sample));
}

TEST(TokenizerJson, Llama3StyleDocument) {
    // The shape of Meta's file: Split(regex) + ByteLevel(use_regex false), added tokens outside
    // the model vocabulary, ignore_merges.
    auto doc = nlohmann::json::parse(BpeTokenizer::from_parts(byte_vocab(), {}, {}).to_json());
    doc["pre_tokenizer"] = nlohmann::json::parse(R"({"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
         "behavior": "Isolated", "invert": false},
        {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}]})");
    doc["post_processor"] = nlohmann::json::parse(R"({"type": "TemplateProcessing", "single": []})");
    doc["added_tokens"] = nlohmann::json::parse(R"([
        {"id": 256, "content": "<|begin_of_text|>", "special": true},
        {"id": 257, "content": "<|end_of_text|>", "special": true},
        {"id": 258, "content": "<|reserved_special_token_0|>", "special": true}])");
    doc["model"]["ignore_merges"] = true;
    const BpeTokenizer tokenizer = BpeTokenizer::from_json(doc.dump(), "llama3.json");
    EXPECT_EQ(tokenizer.vocab_size(), 259);
    EXPECT_EQ(tokenizer.bos_id(), 256);
    EXPECT_EQ(tokenizer.eos_id(), 257);
    EXPECT_EQ(tokenizer.encode("12345"), (std::vector<int32_t>{'1', '2', '3', '4', '5'}));
    EXPECT_EQ(nlohmann::json::parse(tokenizer.to_json())["pre_tokenizer"], doc["pre_tokenizer"]);
}

TEST(TokenizerJson, Gpt2StyleEndOfTextInVocabAndAddedTokens) {
    auto vocab = byte_vocab();
    vocab["<|endoftext|>"] = 256;
    auto doc = nlohmann::json::parse(BpeTokenizer::from_parts(vocab, {}, {"<|endoftext|>"}).to_json());
    EXPECT_EQ(doc["added_tokens"][0]["id"], 256);
    const BpeTokenizer tokenizer = BpeTokenizer::from_json(doc.dump());
    EXPECT_EQ(tokenizer.vocab_size(), 257);
    EXPECT_EQ(tokenizer.eos_id(), 256);
    EXPECT_EQ(tokenizer.decode({256}), "<|endoftext|>");
}

TEST(TokenizerJson, RejectsMalformedInput) {
    EXPECT_NE(load_error("{not json", "broken.json").find("broken.json: invalid tokenizer JSON"), std::string::npos);

    auto missing = trained_json();
    missing["model"].erase("vocab");
    EXPECT_NE(load_error(missing.dump()).find("bad.json: model lacks the field 'vocab'"), std::string::npos);

    auto unknown_merge = trained_json();
    unknown_merge["model"]["merges"].push_back("zzz_unknown \u0120the");
    const std::string merge_error = load_error(unknown_merge.dump(), "merges.json");
    EXPECT_NE(merge_error.find("merges.json:"), std::string::npos) << merge_error;
    EXPECT_NE(merge_error.find("'zzz_unknown', which is not in the vocabulary"), std::string::npos) << merge_error;

    auto bad_merge_form = trained_json();
    bad_merge_form["model"]["merges"].push_back("a b c");
    EXPECT_NE(load_error(bad_merge_form.dump()).find("is not of the form"), std::string::npos);

    auto duplicate_id = trained_json();
    duplicate_id["model"]["vocab"]["zzz"] = 3;
    EXPECT_NE(load_error(duplicate_id.dump()).find("duplicate id 3"), std::string::npos);

    auto out_of_range = trained_json();
    out_of_range["added_tokens"][0]["id"] = 100000;
    EXPECT_NE(load_error(out_of_range.dump()).find("id 100000 of token '<|endoftext|>' is out of range"),
              std::string::npos);

    auto negative = trained_json();
    negative["model"]["vocab"]["a"] = -5;
    EXPECT_NE(load_error(negative.dump()).find("out of range"), std::string::npos);

    std::unordered_map<std::string, int32_t> no_zero_byte;
    for (int b = 1; b < 256; ++b) no_zero_byte.emplace(BpeTokenizer::byte_to_unicode()[b], b - 1);
    try {
        BpeTokenizer::from_parts(no_zero_byte, {}, {});
        ADD_FAILURE() << "a vocabulary without byte 0 was accepted";
    } catch (const ModelError& e) {
        EXPECT_NE(std::string(e.what()).find("lacks the byte-level token '\u0100' for byte 0"), std::string::npos)
            << e.what();
    }
}

// Regression (found by fuzzing, tests/fuzz): a post_processor naming an id past the vocabulary
// loaded, and encode(..., add_special_tokens) then returned that id, an out-of-range index for
// the model's embedding.
TEST(TokenizerJson, PostProcessorIdsMustBeInTheVocabulary) {
    const auto doc = trained_json();
    const int32_t n = BpeTokenizer::from_json(doc.dump()).vocab_size();
    auto roberta = doc;
    roberta["post_processor"] = {{"type", "RobertaProcessing"}, {"cls", {"<s>", 0}}, {"sep", {"</s>", n}}};
    EXPECT_EQ(load_error(roberta.dump(), "tokenizer.json"),
              "tokenizer.json: post_processor adds id " + std::to_string(n) + ", outside the vocabulary (" +
                  std::to_string(n) + " tokens)");
    auto nested = doc;
    nested["post_processor"] = nlohmann::json::parse(R"({"type": "Sequence", "processors": [{"type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "<x>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "special_tokens": {"<x>": {"id": "<x>", "ids": [2147483647], "tokens": ["<x>"]}}}]})");
    EXPECT_NE(load_error(nested.dump()).find("post_processor.processors[0] adds id 2147483647"), std::string::npos);
    auto inside = doc;
    inside["post_processor"] = {{"type", "BertProcessing"}, {"cls", {"a", 0}}, {"sep", {"b", n - 1}}};
    const BpeTokenizer ok = BpeTokenizer::from_json(inside.dump());
    const auto ids = ok.encode("hi", EncodeOptions::hugging_face(true));
    ASSERT_GE(ids.size(), 2u);
    EXPECT_EQ(ids.front(), 0);
    EXPECT_EQ(ids.back(), n - 1);
}

// Regression: a component nested 200000 levels deep overflowed the stack (nlohmann's recursive
// dump() keeps each component as text); deep nesting is refused before parsing now.
TEST(TokenizerJson, DeeplyNestedJsonIsRefusedBeforeParsing) {
    auto doc = trained_json();
    doc["normalizer"] = nullptr;
    std::string text = doc.dump();
    const std::string deep = std::string(200000, '[') + std::string(200000, ']');
    text.replace(text.find("\"normalizer\":null"), 17, "\"normalizer\":" + deep);
    EXPECT_EQ(load_error(text, "tokenizer.json"),
              "tokenizer.json: JSON nested deeper than 64 levels; not a tokenizer.json");
    // Brackets inside strings do not count.
    auto strings = trained_json();
    int next_id = 0;  // above every id, the added tokens' included
    for (const auto& item : strings["model"]["vocab"].items()) next_id = std::max(next_id, item.value().get<int>() + 1);
    for (const auto& token : strings["added_tokens"]) next_id = std::max(next_id, token["id"].get<int>() + 1);
    strings["model"]["vocab"][std::string(100, '[') + "\"{"] = next_id;
    EXPECT_NO_THROW(BpeTokenizer::from_json(strings.dump()));
}

TEST(TokenizerJson, FromFileReadsOnlyARegularFile) {
    try {
        BpeTokenizer::from_file("/dev/zero");
        FAIL() << "expected ModelError";
    } catch (const ModelError& e) {
        EXPECT_NE(std::string(e.what()).find("/dev/zero: not a regular file (a FIFO, socket or device); give the tokenizer file itself"),
                  std::string::npos) << e.what();
    }
    EXPECT_THROW(BpeTokenizer::from_file("/nonexistent/tokenizer.json"), ModelError);
}

TEST(TokenizerJson, RejectsUnsupportedComponents) {
    // Each is one line naming the file and the key path.
    auto unknown_pre = trained_json();
    unknown_pre["pre_tokenizer"] = nlohmann::json::parse(R"({"type": "Sequence", "pretokenizers": [
        {"type": "Foo"}, {"type": "ByteLevel", "add_prefix_space": false, "use_regex": false}]})");
    EXPECT_EQ(load_error(unknown_pre.dump(), "tokenizer.json"),
              "tokenizer.json: pre_tokenizer.pretokenizers[0].type 'Foo' is not supported");

    auto lookbehind = trained_json();
    lookbehind["pre_tokenizer"] = nlohmann::json::parse(R"({"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": "(?<=a)b"}, "behavior": "Isolated", "invert": false},
        {"type": "ByteLevel", "add_prefix_space": false, "use_regex": false}]})");
    const std::string regex_error = load_error(lookbehind.dump(), "t.json");
    EXPECT_EQ(regex_error.rfind("t.json: pre_tokenizer.pretokenizers[0].pattern.Regex \"(?<=a)b\": lookbehind", 0), 0u)
        << regex_error;
    EXPECT_NE(regex_error.find("is not supported"), std::string::npos) << regex_error;
    EXPECT_EQ(regex_error.find('\n'), std::string::npos);

    auto normalizer = trained_json();
    normalizer["normalizer"] = {{"type", "Precompiled"}, {"precompiled_charsmap", "AAAA"}};
    EXPECT_EQ(load_error(normalizer.dump()), "bad.json: normalizer.type 'Precompiled' is not supported");

    auto nested_normalizer = trained_json();
    nested_normalizer["normalizer"] = nlohmann::json::parse(R"({"type": "Sequence", "normalizers": [{"type": "NFC"}, {"type": "Bar"}]})");
    EXPECT_EQ(load_error(nested_normalizer.dump()), "bad.json: normalizer.normalizers[1].type 'Bar' is not supported");

    auto decoder = trained_json();
    decoder["decoder"] = nlohmann::json::parse(R"({"type": "Sequence", "decoders": [{"type": "CTC"}]})");
    EXPECT_EQ(load_error(decoder.dump()), "bad.json: decoder.decoders[0].type 'CTC' is not supported");

    auto post = trained_json();
    post["post_processor"] = {{"type", "Baz"}};
    EXPECT_EQ(load_error(post.dump()), "bad.json: post_processor.type 'Baz' is not supported");

    auto model = trained_json();
    model["model"]["type"] = "WordPiece";
    EXPECT_EQ(load_error(model.dump()), "bad.json: model.type 'WordPiece' is not supported (only BPE)");

    auto behavior = trained_json();
    behavior["pre_tokenizer"] = nlohmann::json::parse(R"({"type": "Split", "pattern": {"String": " "}, "behavior": "Sideways"})");
    EXPECT_EQ(load_error(behavior.dump()),
              "bad.json: pre_tokenizer.behavior \"Sideways\" is not supported "
              "(Removed, Isolated, MergedWithPrevious, MergedWithNext or Contiguous)");

    auto scheme = trained_json();
    scheme["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", "\u2581"}, {"prepend_scheme", "sometimes"}};
    EXPECT_EQ(load_error(scheme.dump()),
              "bad.json: pre_tokenizer.prepend_scheme \"sometimes\" is not supported (first, always or never)");

    auto after_byte_level = trained_json();
    after_byte_level["pre_tokenizer"] = nlohmann::json::parse(R"({"type": "Sequence", "pretokenizers": [
        {"type": "ByteLevel", "add_prefix_space": false}, {"type": "Digits"}]})");
    EXPECT_NE(load_error(after_byte_level.dump()).find("pre_tokenizer.pretokenizers[0]: ByteLevel followed by"),
              std::string::npos);

    auto dropout = trained_json();
    dropout["model"]["dropout"] = 0.1;
    EXPECT_EQ(load_error(dropout.dump()), "bad.json: model.dropout 0.1 is not supported (use null)");

    auto unk = trained_json();
    unk["model"]["unk_token"] = "<nope>";
    EXPECT_EQ(load_error(unk.dump()), "bad.json: model.unk_token '<nope>' is not in model.vocab");

    // NFC is real now and written back.
    auto nfc = trained_json();
    nfc["normalizer"] = {{"type", "NFC"}};
    EXPECT_EQ(load_error(nfc.dump()), "");
    EXPECT_EQ(nlohmann::json::parse(BpeTokenizer::from_json(nfc.dump()).to_json())["normalizer"]["type"], "NFC");
}

// ---------------------------------------------------------------- trainer

TEST(Trainer, DeterministicAndCompresses) {
    const std::vector<std::string> texts = {synthetic_text(1, 1500), synthetic_text(2, 1500)};
    BpeTrainOptions options;
    options.vocab_size = 500;
    const BpeTokenizer first = bpe_train(texts, options);
    const BpeTokenizer second = bpe_train(texts, options);
    EXPECT_EQ(first.to_json(), second.to_json());
    EXPECT_EQ(first.vocab_size(), 500);

    const std::string unseen = synthetic_text(99, 200);
    const std::size_t tokens = first.encode(unseen).size();
    EXPECT_LT(tokens * 2, unseen.size()) << tokens << " tokens for " << unseen.size() << " bytes";
    EXPECT_EQ(first.decode(first.encode(unseen)), unseen);

    // Byte tokens come first, in byte order.
    for (int b = 0; b < 256; ++b) ASSERT_EQ(first.token_id(BpeTokenizer::byte_to_unicode()[b]), b);
}

TEST(Trainer, FirstMergesAreTheMostFrequentPairs) {
    // Pieces "abab", " cd", " abab", " cd". (a,b) occurs 4 times and merges first. Then
    // (ab,ab), (" ",c) and (c,d) all occur twice; the smallest bytes win: (" ", "c") < ("ab", "ab")
    // < ("c", "d"), and afterwards (" c", "d") < ("ab", "ab").
    BpeTrainOptions options;
    options.vocab_size = 256 + 3;
    options.specials = {};
    const BpeTokenizer tokenizer = bpe_train({"abab cd abab cd"}, options);
    const auto merges = nlohmann::json::parse(tokenizer.to_json())["model"]["merges"];
    ASSERT_EQ(merges.size(), 3u);
    EXPECT_EQ(merges[0], "a b");
    EXPECT_EQ(merges[1], "\u0120 c");
    EXPECT_EQ(merges[2], "\u0120c d");
}

TEST(Trainer, StopsAtMinFrequencyAndRejectsTinyVocab) {
    BpeTrainOptions options;
    options.vocab_size = 1000;
    options.min_frequency = 2;
    const BpeTokenizer tokenizer = bpe_train({"xyz xyz q"}, options);
    // Pieces "xyz", " xyz", " q": only (x,y) and then (xy,z) occur twice.
    EXPECT_EQ(tokenizer.vocab_size(), 256 + 2 + 2);
    options.vocab_size = 200;
    EXPECT_THROW(bpe_train({"abc"}, options), ConfigError);
}

// ---------------------------------------------------------------- Hugging Face pipeline
// Expected values below were produced by Hugging Face `tokenizers` 0.20.3 on the same documents.

namespace {

using nlohmann::json;

json added_token(int id, const std::string& content, bool special = true, bool normalized = false,
                 bool lstrip = false, bool rstrip = false, bool single_word = false) {
    return json{{"id", id},         {"content", content}, {"single_word", single_word}, {"lstrip", lstrip},
                {"rstrip", rstrip}, {"normalized", normalized}, {"special", special}};
}

json bpe_document(const json& vocab, const json& merges, const json& added) {
    return json{{"version", "1.0"},
                {"added_tokens", added},
                {"normalizer", nullptr},
                {"pre_tokenizer", nullptr},
                {"post_processor", nullptr},
                {"decoder", nullptr},
                {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", merges}}}};
}

// Llama 2 / Gemma style: <unk> <s> </s>, the 256 <0xNN> tokens, then a few pieces.
json sentencepiece_document(bool byte_fallback) {
    json vocab = {{"<unk>", 0}, {"<s>", 1}, {"</s>", 2}};
    static const char kHex[] = "0123456789ABCDEF";
    for (int b = 0; b < 256; ++b) vocab[std::string("<0x") + kHex[b >> 4] + kHex[b & 15] + ">"] = 3 + b;
    for (const char* token : {"\u2581", "a", "b", "c", "\u2581a", "ab", "\u2581ab", "\u2581c"}) vocab[token] = vocab.size();
    json doc = bpe_document(vocab, json::parse(R"([["▁","a"],["a","b"],["▁a","b"],["▁","c"]])"),
                            json::array({added_token(0, "<unk>"), added_token(1, "<s>"), added_token(2, "</s>")}));
    doc["model"]["unk_token"] = "<unk>";
    doc["model"]["fuse_unk"] = true;
    doc["model"]["byte_fallback"] = byte_fallback;
    doc["normalizer"] = json::parse(R"({"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "▁"},
        {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]})");
    doc["post_processor"] = json::parse(R"({"type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [], "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}})");
    doc["decoder"] = json::parse(R"({"type": "Sequence", "decoders": [
        {"type": "Replace", "pattern": {"String": "▁"}, "content": " "}, {"type": "ByteFallback"}, {"type": "Fuse"},
        {"type": "Strip", "content": " ", "start": 1, "stop": 0}]})");
    return doc;
}

using Ids = std::vector<int32_t>;
const EncodeOptions kHf = EncodeOptions::hugging_face(false);
const EncodeOptions kHfSpecial = EncodeOptions::hugging_face(true);

// A byte-level tokenizer whose pre-tokenizer is `pre_tokenizer` followed by ByteLevel(no regex).
BpeTokenizer byte_level_with(const json& pre_tokenizer, const json& normalizer = nullptr) {
    json doc = nlohmann::json::parse(BpeTokenizer::from_parts(byte_vocab(), {}, {}).to_json());
    json steps = json::array();
    if (!pre_tokenizer.is_null()) steps.push_back(pre_tokenizer);
    steps.push_back(json{{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}});
    doc["pre_tokenizer"] = json{{"type", "Sequence"}, {"pretokenizers", steps}};
    doc["normalizer"] = normalizer;
    return BpeTokenizer::from_json(doc.dump(), "test.json");
}

Pieces pieces_with(const json& pre_tokenizer, const std::string& text) {
    return byte_level_with(pre_tokenizer).model_pieces(text);
}

json split(const std::string& kind, const std::string& pattern, const std::string& behavior, bool invert) {
    return json{{"type", "Split"}, {"pattern", {{kind, pattern}}}, {"behavior", behavior}, {"invert", invert}};
}

std::string normalized_with(const std::string& type, const std::string& text) {
    const Pieces pieces = byte_level_with(nullptr, json{{"type", type}}).model_pieces(text);
    return join(pieces);
}

// Random text from letters, digits, marks, spaces (incl. CR/LF/tab/NBSP), apostrophes and
// contraction letters, punctuation, CJK and emoji.
std::string random_unicode_text(std::mt19937& rng, std::size_t length) {
    static const char* const kAtoms[] = {"a", "Z", "s", "T", "re", "VE", "m", "LL", "d", "'", "'", "1", "23", "٣",
                                         " ", " ", "  ", "\t", "\n", "\r\n", "\u00a0", "\u3000", ".", ",!", "(",
                                         "-", "é", "e\u0301", "東", "😀", "\u200d", "ſ", "K", "\xff", "_", "$"};
    std::uniform_int_distribution<std::size_t> pick(0, sizeof(kAtoms) / sizeof(kAtoms[0]) - 1);
    std::string out;
    for (std::size_t i = 0; i < length; ++i) out += kAtoms[pick(rng)];
    return out;
}

}  // namespace

TEST(SentencePieceStyle, ByteFallbackPrependReplaceAndTemplate) {
    const BpeTokenizer tokenizer = BpeTokenizer::from_json(sentencepiece_document(true).dump(), "sp.json");
    EXPECT_EQ(tokenizer.encode("ab c", kHf), (Ids{265, 266}));
    EXPECT_EQ(tokenizer.encode("ab c", kHfSpecial), (Ids{1, 265, 266}));
    EXPECT_EQ(tokenizer.encode("ab\u20ac", kHf), (Ids{265, 229, 133, 175}));  // € as <0xE2><0x82><0xAC>
    EXPECT_EQ(tokenizer.encode("c\u00e9", kHf), (Ids{266, 198, 172}));
    // Each stretch between added tokens is normalized on its own, so "c" gets its own "▁".
    EXPECT_EQ(tokenizer.encode("ab</s>c", kHfSpecial), (Ids{1, 265, 2, 266}));
    EXPECT_EQ(tokenizer.encode("", kHf), (Ids{}));
    EXPECT_EQ(tokenizer.encode("", kHfSpecial), (Ids{1}));
    EXPECT_EQ(tokenizer.encode(" a", kHf), (Ids{259, 263}));
    EXPECT_EQ(tokenizer.encode("<s>", kHfSpecial), (Ids{1, 1}));
    EXPECT_EQ(tokenizer.decode({1, 265, 266}), "<s> ab c");
    EXPECT_EQ(tokenizer.decode({1, 265, 229, 133, 175}), "<s> ab\u20ac");
    EXPECT_EQ(tokenizer.decode({1, 265, 2, 266}), "<s> ab</s> c");
    EXPECT_EQ(tokenizer.decode({1, 259, 263}), "<s>  a");
    // Byte tokens that are not valid UTF-8 decode to one U+FFFD each.
    EXPECT_EQ(tokenizer.decode({3 + 0xE2, 3 + 0x82, 260}), "\ufffd\ufffda");
    // Special added tokens in the text are plain text unless asked for.
    EXPECT_EQ(tokenizer.encode("</s>"), (Ids{259, 3 + '<', 3 + '/', 3 + 's', 3 + '>'}));
    // Written back and read again, the document behaves the same.
    const BpeTokenizer reread = BpeTokenizer::from_json(tokenizer.to_json(), "reread.json");
    EXPECT_EQ(reread.encode("ab\u20ac c", kHfSpecial), tokenizer.encode("ab\u20ac c", kHfSpecial));
    EXPECT_EQ(reread.to_json(), tokenizer.to_json());
}

TEST(SentencePieceStyle, UnknownCharactersFuseIntoOneUnkWithoutByteFallback) {
    const BpeTokenizer tokenizer = BpeTokenizer::from_json(sentencepiece_document(false).dump(), "sp.json");
    EXPECT_EQ(tokenizer.encode("ab xyz c", kHf), (Ids{265, 259, 0, 266}));
    EXPECT_EQ(tokenizer.encode("\u00e9\u00e9 a", kHf), (Ids{259, 0, 263}));
    EXPECT_EQ(tokenizer.decode({1, 265, 259, 0, 266}), "<s> ab <unk> c");
}

TEST(Metaspace, PrependFirstSplitAndDecoder) {
    const json vocab = {{"\u2581", 0}, {"a", 1}, {"b", 2}, {"\u2581a", 3}, {"\u2581b", 4}, {"<sep>", 5}, {"<unk>", 6}};
    json doc = bpe_document(vocab, json::parse(R"([["▁","a"],["▁","b"]])"),
                            json::array({added_token(5, "<sep>"), added_token(6, "<unk>")}));
    doc["model"]["unk_token"] = "<unk>";
    doc["pre_tokenizer"] = json::parse(R"({"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": true})");
    doc["decoder"] = json::parse(R"({"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": true})");
    const BpeTokenizer tokenizer = BpeTokenizer::from_json(doc.dump(), "meta.json");
    EXPECT_EQ(tokenizer.encode("a b", kHf), (Ids{3, 4}));
    EXPECT_EQ(tokenizer.encode("a<sep>b", kHf), (Ids{3, 5, 2}));  // "first": no ▁ after the added token
    EXPECT_EQ(tokenizer.encode("a  b", kHf), (Ids{3, 0, 4}));
    EXPECT_EQ(tokenizer.encode("b<sep> a", kHf), (Ids{4, 5, 3}));
    EXPECT_EQ(tokenizer.decode({3, 4}), "a b");
    EXPECT_EQ(tokenizer.decode({3, 5, 2}), "a<sep>b");
    EXPECT_EQ(tokenizer.decode({4, 5, 3}), "b<sep> a");
    EXPECT_EQ(tokenizer.model_pieces("a  b"), (Pieces{"\u2581a", "\u2581", "\u2581b"}));

    doc["pre_tokenizer"]["prepend_scheme"] = "always";
    EXPECT_EQ(BpeTokenizer::from_json(doc.dump()).encode("a<sep>b", kHf), (Ids{3, 5, 4}));
    doc["pre_tokenizer"]["prepend_scheme"] = "never";
    EXPECT_EQ(BpeTokenizer::from_json(doc.dump()).encode("a b", kHf), (Ids{1, 4}));
}

TEST(AddedTokens, FlagsMatchLikeHuggingFace) {
    auto vocab = byte_vocab();
    for (const char* token : {"ab", "up", "wo", "wor"}) vocab.emplace(token, static_cast<int32_t>(vocab.size()));
    json doc = bpe_document(vocab, json::parse(R"([["a","b"],["u","p"],["w","o"],["wo","r"]])"),
                            json::array({added_token(260, "word", false, false, false, false, true),
                                         added_token(261, "<lst>", true, false, true),
                                         added_token(262, "<rst>", true, false, false, true), added_token(263, "<sp>"),
                                         added_token(264, "UP", false, true), added_token(265, "\n\n", false)}));
    doc["normalizer"] = {{"type", "Lowercase"}};
    doc["pre_tokenizer"] = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}};
    doc["decoder"] = {{"type", "ByteLevel"}};
    const BpeTokenizer tokenizer = BpeTokenizer::from_json(doc.dump(), "flags.json");
    EXPECT_EQ(tokenizer.encode("a  <lst>b", kHf), (Ids{'a', 261, 'b'}));  // lstrip takes the spaces before
    EXPECT_EQ(tokenizer.encode("a<rst>   b", kHf), (Ids{'a', 262, 'b'}));  // rstrip the spaces after
    // Added tokens inside the white space rstrip took are still found (and the text after the
    // last of them is encoded), as Hugging Face's matcher does.
    EXPECT_EQ(tokenizer.encode("<rst>\n\n\n x", kHf), (Ids{262, 265, '\n', ' ', 'x'}));
    // single_word: only where no letter or digit touches it.
    EXPECT_EQ(tokenizer.encode("word words aword word.", kHf),
              (Ids{260, ' ', 259, 'd', 's', ' ', 'a', 259, 'd', ' ', 260, '.'}));
    // '_' and U+200D ZERO WIDTH JOINER count as word characters (the Rust regex crate's \w).
    EXPECT_EQ(tokenizer.encode("_word \u200dword", kHf), (Ids{'_', 259, 'd', ' ', 226, 128, 141, 259, 'd'}));
    // normalized: matched in the lowercased text, so "UP" and "up" both hit.
    EXPECT_EQ(tokenizer.encode("x UP y up", kHf), (Ids{'x', ' ', 264, ' ', 'y', ' ', 264}));
    EXPECT_EQ(tokenizer.encode("<sp>x", kHf), (Ids{263, 'x'}));
    // Special tokens as text (the default); non-special added tokens are still matched.
    EXPECT_EQ(tokenizer.encode("<sp>x word"), (Ids{'<', 's', 'p', '>', 'x', ' ', 260}));
    EXPECT_EQ(tokenizer.decode({263, 'x', 264}), "<sp>xUP");
    EXPECT_EQ(tokenizer.decode({'a', 261, 'b'}), "a<lst>b");
}

TEST(SplitBehaviours, AllBehavioursAndInvert) {
    const std::string text = "a--b---c-";
    struct Case {
        const char* behavior;
        bool invert;
        Pieces expected;
    };
    const Case cases[] = {
        {"Removed", false, {"a", "b", "c"}},
        {"Removed", true, {"-", "-", "-", "-", "-", "-"}},
        {"Isolated", false, {"a", "-", "-", "b", "-", "-", "-", "c", "-"}},
        {"Isolated", true, {"a", "-", "-", "b", "-", "-", "-", "c", "-"}},
        {"MergedWithPrevious", false, {"a-", "-", "b-", "-", "-", "c-"}},
        {"MergedWithPrevious", true, {"a", "-", "-b", "-", "-", "-c", "-"}},
        {"MergedWithNext", false, {"a", "-", "-b", "-", "-", "-c", "-"}},
        {"MergedWithNext", true, {"a-", "-", "b-", "-", "-", "c-"}},
        {"Contiguous", false, {"a", "--", "b", "---", "c", "-"}},
        {"Contiguous", true, {"a", "--", "b", "---", "c", "-"}},
    };
    for (const Case& c : cases) {
        EXPECT_EQ(pieces_with(split("String", "-", c.behavior, c.invert), text), c.expected)
            << c.behavior << " invert " << c.invert;
        EXPECT_EQ(pieces_with(split("Regex", "-", c.behavior, c.invert), text), c.expected)
            << c.behavior << " invert " << c.invert << " (regex)";
    }
    // Empty regex matches: Oniguruma's iteration rules, then empty pieces dropped.
    EXPECT_EQ(pieces_with(split("Regex", "x*", "Isolated", false), "axxbc"), (Pieces{"a", "xx", "b", "c"}));
    EXPECT_EQ(pieces_with(split("Regex", "x*", "MergedWithPrevious", false), "axxbc"), (Pieces{"axx", "b", "c"}));
}

TEST(PreTokenizers, OtherHuggingFaceSteps) {
    EXPECT_EQ(pieces_with(json{{"type", "Digits"}, {"individual_digits", false}}, "ab123c45"),
              (Pieces{"ab", "123", "c", "45"}));
    EXPECT_EQ(pieces_with(json{{"type", "Digits"}, {"individual_digits", true}}, "a12"), (Pieces{"a", "1", "2"}));
    EXPECT_EQ(pieces_with(json{{"type", "Punctuation"}}, "a,b!!c"), (Pieces{"a", ",", "b", "!", "!", "c"}));
    EXPECT_EQ(pieces_with(json{{"type", "Whitespace"}}, "a, b!! c_d \u00e9"),
              (Pieces{"a", ",", "b", "!!", "c_d", "\u00e9"}));
    EXPECT_EQ(pieces_with(json{{"type", "WhitespaceSplit"}}, " a  b\tc "), (Pieces{"a", "b", "c"}));
    // ByteLevel with add_prefix_space: every stretch starts with a space.
    json doc = nlohmann::json::parse(BpeTokenizer::from_parts(byte_vocab(), {}, {}).to_json());
    doc["pre_tokenizer"]["add_prefix_space"] = true;
    EXPECT_EQ(BpeTokenizer::from_json(doc.dump()).model_pieces("hi there"), (Pieces{" hi", " there"}));
}

TEST(PreTokenizers, RegexEngineAgreesWithHandWrittenMatchers) {
    // "(?:...)" hides the known pattern text, so the regex engine runs instead of the hand-written
    // matcher: both must cut every text identically.
    const std::pair<const char*, Kind> patterns[] = {
        {R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)", Kind::Gpt2},
        {R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)",
         Kind::Llama3},
        {R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)",
         Kind::Qwen2},
    };
    std::mt19937 rng(11);
    std::vector<std::string> texts(kSamples.begin(), kSamples.end());
    for (int i = 0; i < 300; ++i) texts.push_back(random_unicode_text(rng, 1 + i % 40));
    for (const auto& [pattern, kind] : patterns) {
        const BpeTokenizer engine =
            byte_level_with(split("Regex", std::string("(?:") + pattern + ")", "Isolated", false));
        const BpeTokenizer hand_written = byte_level_with(split("Regex", pattern, "Isolated", false));
        for (const std::string& text : texts) {
            const Pieces expected = BpeTokenizer::pre_tokenize(text, kind);
            ASSERT_EQ(hand_written.model_pieces(text), expected) << nlohmann::json(text).dump();
            ASSERT_EQ(engine.model_pieces(text), expected) << static_cast<int>(kind) << " " << nlohmann::json(text).dump();
        }
    }
}

TEST(Normalizers, UnicodeFormsLowercaseAndStrip) {
    EXPECT_EQ(normalized_with("NFC", "e\u0301 A\u030a \u1112\u1161\u11ab"), "\u00e9 \u00c5 \ud55c");
    EXPECT_EQ(normalized_with("NFD", "\u00e9 \u00c5 \ud55c"), "e\u0301 A\u030a \u1112\u1161\u11ab");
    // Canonical reordering: dot below (220) before dot above (230).
    EXPECT_EQ(normalized_with("NFD", "q\u0307\u0323"), "q\u0323\u0307");
    EXPECT_EQ(normalized_with("NFC", "\u1e9b\u0323"), "\u1e9b\u0323");
    EXPECT_EQ(normalized_with("NFKC", "\ufb01 \u2460 \u1e9b\u0323"), "fi 1 \u1e69");
    EXPECT_EQ(normalized_with("NFKD", "\u00bd"), "1\u20442");
    EXPECT_EQ(normalized_with("NFC", "\u212b \u2126"), "\u00c5 \u03a9");  // singletons
    EXPECT_EQ(normalized_with("Lowercase", "\u0391\u03a3 \u0130 ABC"), "\u03b1\u03c3 i\u0307 abc");
    const BpeTokenizer strip = byte_level_with(nullptr, json{{"type", "Strip"}, {"strip_left", true}, {"strip_right", false}});
    EXPECT_EQ(join(strip.model_pieces(" \t a b \n")), "a b \n");
    // Invalid UTF-8 passes through the normalizers untouched.
    EXPECT_EQ(normalized_with("NFC", "a\xff" "e\u0301"), "a\xff\u00e9");
    // NFC in a byte-level file: NFD input encodes like its NFC form.
    const BpeTokenizer nfc = byte_level_with(nullptr, json{{"type", "NFC"}});
    EXPECT_EQ(nfc.encode("cafe\u0301"), nfc.encode("caf\u00e9"));
}
