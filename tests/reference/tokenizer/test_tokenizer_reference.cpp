// h2tune's tokenizer against Hugging Face `tokenizers` on the reference corpus: for GPT-2,
// Llama 3, Qwen3, Gemma 3 and files h2tune's trainer wrote, every string's ids with and without special tokens and the decode
// of Hugging Face's ids must be identical to what hf_reference.py recorded. Prints identical/total
// per tokenizer and lists the first differing strings with both id lists.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "../../../src/tokenizer/unicode.h"  // append_utf8: the library's own encoder

#include "h2tune/tokenizer/bpe_tokenizer.h"

using namespace h2tune;

namespace {

std::string reference_dir() {
    const char* dir = std::getenv("H2TUNE_TOKENIZER_REFERENCE");
    return dir ? dir : "";
}

std::string ids_text(const std::vector<int32_t>& ids) {
    std::string out = "[";
    for (std::size_t i = 0; i < ids.size(); ++i) out += (i ? " " : "") + std::to_string(ids[i]);
    return out + "]";
}

// The string as a JSON literal, so control characters and spaces are visible.
std::string shown(const std::string& text) {
    const std::string quoted = nlohmann::json(text).dump();
    return quoted.size() > 160 ? quoted.substr(0, 160) + "...\"" : quoted;
}

// Valid UTF-8 (the pieces of a valid text) to code points.
std::vector<uint32_t> decode_utf8(const std::string& text) {
    std::vector<uint32_t> out;
    for (std::size_t i = 0; i < text.size();) {
        const auto lead = static_cast<unsigned char>(text[i]);
        const int length = lead < 0x80 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4;
        uint32_t cp = length == 1 ? lead : lead & (0xFF >> (length + 1));
        for (int k = 1; k < length; ++k) cp = (cp << 6) | (static_cast<unsigned char>(text[i + k]) & 0x3F);
        out.push_back(cp);
        i += static_cast<std::size_t>(length);
    }
    return out;
}

struct Tally {
    explicit Tally(const char* name) : what(name) {}
    const char* what;
    std::size_t identical = 0;
    std::vector<std::string> differences;  // first few

    void add(bool same, const std::string& detail) {
        if (same) {
            ++identical;
        } else if (differences.size() < 8) {
            differences.push_back(detail);
        }
    }
};

class TokenizerReference : public ::testing::TestWithParam<std::string> {};

TEST_P(TokenizerReference, IdenticalToHuggingFace) {
    const std::string dir = reference_dir();
    ASSERT_FALSE(dir.empty()) << "H2TUNE_TOKENIZER_REFERENCE is not set (the reference_tokenizer_fixtures test sets "
                                 "up the data it names)";
    const std::string path = dir + "/" + GetParam() + ".json";
    std::ifstream in(path, std::ios::binary);
    ASSERT_TRUE(in) << "cannot open " << path;
    const nlohmann::json reference = nlohmann::json::parse(in);
    const BpeTokenizer tokenizer = BpeTokenizer::from_file(reference["tokenizer_json"].get<std::string>());

    Tally plain{"ids, add_special_tokens=False"}, special{"ids, add_special_tokens=True"};
    Tally decoded{"decode(HF ids)"}, decoded_special{"decode(HF ids with special tokens)"};
    const auto& cases = reference["cases"];
    for (const auto& item : cases) {
        const std::string text = item["text"].get<std::string>();
        const auto want = item["ids"].get<std::vector<int32_t>>();
        const auto want_special = item["ids_special"].get<std::vector<int32_t>>();
        const auto got = tokenizer.encode(text, EncodeOptions::hugging_face(false));
        const auto got_special = tokenizer.encode(text, EncodeOptions::hugging_face(true));
        plain.add(got == want, shown(text) + "\n      hf  " + ids_text(want) + "\n      ours " + ids_text(got));
        special.add(got_special == want_special,
                    shown(text) + "\n      hf  " + ids_text(want_special) + "\n      ours " + ids_text(got_special));
        const std::string want_text = item["decoded"].get<std::string>();
        const std::string got_text = tokenizer.decode(want);
        decoded.add(got_text == want_text, shown(text) + "\n      hf   " + shown(want_text) + "\n      ours " + shown(got_text));
        const std::string want_special_text = item["decoded_special"].get<std::string>();
        const std::string got_special_text = tokenizer.decode(want_special);
        decoded_special.add(got_special_text == want_special_text,
                            shown(text) + "\n      hf   " + shown(want_special_text) + "\n      ours " +
                                shown(got_special_text));
    }
    std::ostringstream report;
    for (const Tally* tally : {&plain, &special, &decoded, &decoded_special}) {
        report << GetParam() << " " << tally->what << ": " << tally->identical << "/" << cases.size() << " identical\n";
        for (const std::string& difference : tally->differences) report << "    " << difference << "\n";
    }
    std::cout << report.str();
    for (const Tally* tally : {&plain, &special, &decoded, &decoded_special}) {
        EXPECT_EQ(tally->identical, cases.size()) << GetParam() << " " << tally->what;
    }
}

// The real files' regexes normally run on hand-written matchers. Wrapped in "(?:...)" they run on
// the general regex engine instead, which must give the same ids on the whole corpus too.
class RegexEngineReference : public ::testing::TestWithParam<std::string> {};

TEST_P(RegexEngineReference, IdenticalToHuggingFace) {
    const std::string dir = reference_dir();
    ASSERT_FALSE(dir.empty()) << "H2TUNE_TOKENIZER_REFERENCE is not set";
    std::ifstream in(dir + "/" + GetParam() + ".json", std::ios::binary);
    ASSERT_TRUE(in);
    const nlohmann::json reference = nlohmann::json::parse(in);
    std::ifstream file(reference["tokenizer_json"].get<std::string>(), std::ios::binary);
    nlohmann::json doc = nlohmann::json::parse(file);
    nlohmann::json& pre = doc["pre_tokenizer"];
    if (pre["type"] == "ByteLevel") {  // GPT-2: the ByteLevel regex as an explicit Split
        ASSERT_TRUE(pre["use_regex"].get<bool>());
        const std::string gpt2 = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
        nlohmann::json byte_level = pre;
        byte_level["use_regex"] = false;
        pre = {{"type", "Sequence"},
               {"pretokenizers", {{{"type", "Split"}, {"pattern", {{"Regex", gpt2}}}, {"behavior", "Isolated"},
                                   {"invert", false}},
                                  byte_level}}};
    }
    nlohmann::json& split = pre["pretokenizers"][0];
    ASSERT_EQ(split["type"], "Split");
    split["pattern"]["Regex"] = "(?:" + split["pattern"]["Regex"].get<std::string>() + ")";
    const BpeTokenizer tokenizer = BpeTokenizer::from_json(doc.dump(), GetParam() + " (regex engine)");

    Tally plain{"ids via the regex engine"};
    const auto& cases = reference["cases"];
    for (const auto& item : cases) {
        const std::string text = item["text"].get<std::string>();
        const auto want = item["ids"].get<std::vector<int32_t>>();
        const auto got = tokenizer.encode(text, EncodeOptions::hugging_face(false));
        plain.add(got == want, shown(text) + "\n      hf  " + ids_text(want) + "\n      ours " + ids_text(got));
    }
    std::cout << GetParam() << " " << plain.what << ": " << plain.identical << "/" << cases.size() << " identical\n";
    for (const std::string& difference : plain.differences) std::cout << "    " << difference << "\n";
    EXPECT_EQ(plain.identical, cases.size());
}

INSTANTIATE_TEST_SUITE_P(Files, RegexEngineReference, ::testing::Values("gpt2", "llama3", "qwen3"),
                         [](const ::testing::TestParamInfo<std::string>& param) { return param.param; });

// Character classes code point by code point: what h2tune's regex engine matches of every assigned
// code point (and slices of the unassigned and private-use planes) must be what Hugging Face's
// Oniguruma matched (regex_classes.json).
TEST(RegexClassReference, EveryCodePointLikeOniguruma) {
    const std::string dir = reference_dir();
    ASSERT_FALSE(dir.empty()) << "H2TUNE_TOKENIZER_REFERENCE is not set";
    std::ifstream in(dir + "/regex_classes.json", std::ios::binary);
    ASSERT_TRUE(in);
    const nlohmann::json recorded = nlohmann::json::parse(in);
    const nlohmann::json& classes = recorded["classes"];
    std::string text;  // the probed code points in order (planes 0-3 and 14 whole, slices of the rest)
    for (const auto& range : recorded["probed"]) {
        for (uint32_t cp = range[0].get<uint32_t>(); cp <= range[1].get<uint32_t>(); ++cp) tokenizer_detail::append_utf8(cp, text);
    }
    nlohmann::json vocab;
    for (int b = 0; b < 256; ++b) vocab[BpeTokenizer::byte_to_unicode()[b]] = b;
    std::size_t identical = 0;
    for (const auto& [pattern, ranges] : classes.items()) {
        // Removed + invert keeps exactly the matches.
        const nlohmann::json doc = {
            {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", nlohmann::json::array()}}},
            {"pre_tokenizer",
             {{"type", "Sequence"},
              {"pretokenizers",
               {{{"type", "Split"}, {"pattern", {{"Regex", pattern}}}, {"behavior", "Removed"}, {"invert", true}},
                {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}}}}}};
        const BpeTokenizer tokenizer = BpeTokenizer::from_json(doc.dump(), "class " + pattern);
        std::vector<std::pair<uint32_t, uint32_t>> got;
        for (const std::string& piece : tokenizer.model_pieces(text)) {
            for (uint32_t cp : decode_utf8(piece)) {
                if (!got.empty() && got.back().second + 1 == cp) {
                    got.back().second = cp;
                } else {
                    got.emplace_back(cp, cp);
                }
            }
        }
        const auto want = ranges.get<std::vector<std::pair<uint32_t, uint32_t>>>();
        if (got == want) {
            ++identical;
        } else {
            ADD_FAILURE() << pattern << ": " << want.size() << " ranges in Oniguruma, " << got.size() << " in h2tune";
        }
    }
    std::cout << "regex classes identical on every probed code point: " << identical << "/" << classes.size() << "\n";
}

// The four real files, files written by h2tune's trainer (train_reference_tokenizers) and variants
// of the GPT-2 file (hf_reference.py VARIANTS).
INSTANTIATE_TEST_SUITE_P(Files, TokenizerReference,
                         ::testing::Values("gpt2", "llama3", "qwen3", "gemma3", "trained_gpt2", "trained_llama3",
                                           "trained_qwen2", "trained_gpt2_digits", "gpt2_split_merged_previous",
                                           "gpt2_split_merged_next", "gpt2_split_contiguous_invert",
                                           "gpt2_split_removed_literal", "gpt2_split_lazy_icase",
                                           "gpt2_whitespace_punctuation", "gpt2_bert_digits", "gpt2_metaspace_nfkc",
                                           "gpt2_nfd_categories", "gpt2_strip_replace", "gpt2_prefix_space",
                                           "gpt2_added_flags"),
                         [](const ::testing::TestParamInfo<std::string>& param) { return param.param; });

}  // namespace
