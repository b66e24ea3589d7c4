// Reading and writing the Hugging Face tokenizer.json format.
#include <algorithm>
#include <fstream>
#include <limits>
#include <sstream>

#include <nlohmann/json.hpp>

#include "h2tune/core/error.h"
#include "h2tune/tokenizer/bpe_tokenizer.h"

namespace h2tune {
namespace {

using json = nlohmann::json;
using ordered_json = nlohmann::ordered_json;

const char* const kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
const char* const kLlama3Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
const char* const kQwen2Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

std::string type_of(const json& step) {
    const auto it = step.find("type");
    return it != step.end() && it->is_string() ? it->get<std::string>() : std::string("<untyped>");
}

// "Sequence[Split, ByteLevel]" or "Whitespace" for error messages.
std::string describe_steps(const json& pre_tokenizer, const std::vector<const json*>& steps) {
    if (type_of(pre_tokenizer) != "Sequence") return type_of(pre_tokenizer);
    std::string out = "Sequence[";
    for (std::size_t i = 0; i < steps.size(); ++i) out += (i ? ", " : "") + type_of(*steps[i]);
    return out + "]";
}

ordered_json byte_level_json(bool use_regex) {
    return ordered_json{{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true},
                        {"use_regex", use_regex}};
}

ordered_json pre_tokenizer_json(BpeTokenizer::PreTokenizer kind) {
    auto split = [](const char* pattern) {
        return ordered_json{{"type", "Split"},
                            {"pattern", ordered_json{{"Regex", pattern}}},
                            {"behavior", "Isolated"},
                            {"invert", false}};
    };
    auto sequence = [](ordered_json first, ordered_json second) {
        return ordered_json{{"type", "Sequence"}, {"pretokenizers", ordered_json::array({first, second})}};
    };
    switch (kind) {
        case BpeTokenizer::PreTokenizer::Llama3:
            return sequence(split(kLlama3Pattern), byte_level_json(false));
        case BpeTokenizer::PreTokenizer::Qwen2:
            return sequence(split(kQwen2Pattern), byte_level_json(false));
        case BpeTokenizer::PreTokenizer::Gpt2IsolatedDigits:
            return sequence(ordered_json{{"type", "Digits"}, {"individual_digits", true}}, byte_level_json(true));
        case BpeTokenizer::PreTokenizer::Gpt2:
            break;
    }
    return byte_level_json(true);
}

// Dumps `value` pretty-printed for a position nested `depth` levels deep.
std::string nested_dump(const ordered_json& value, int depth) {
    const std::string text = value.dump(2);
    const std::string indent(2 * depth, ' ');
    std::string out;
    out.reserve(text.size());
    for (char c : text) {
        out += c;
        if (c == '\n') out += indent;
    }
    return out;
}

// A JSON string literal; throws nlohmann's type_error for invalid UTF-8.
std::string quote(const std::string& text) { return json(text).dump(); }

}  // namespace

// ---------------------------------------------------------------- reading

struct BpeTokenizer::JsonReader {
    const std::string& source;

    [[noreturn]] void fail(const std::string& message) const { throw ModelError(error_at(source, 0, message)); }

    static const json* find(const json& object, const char* key) {
        const auto it = object.find(key);
        return it == object.end() || it->is_null() ? nullptr : &*it;
    }

    const json& require(const json& object, const char* key, const std::string& where) const {
        const json* value = find(object, key);
        if (value == nullptr) fail(where + " lacks the field '" + key + "'");
        return *value;
    }

    bool optional_bool(const json& object, const char* key, bool fallback, const std::string& where) const {
        const json* value = find(object, key);
        if (value == nullptr) return fallback;
        if (!value->is_boolean()) fail(where + "." + key + " must be true or false");
        return value->get<bool>();
    }

    int32_t id_value(const json& value, const std::string& where) const {
        if (!value.is_number_integer()) fail(where + " must be an integer id, not " + value.dump());
        const auto id = value.get<int64_t>();
        if (id < 0 || id > std::numeric_limits<int32_t>::max()) {
            fail(where + " = " + std::to_string(id) + " is out of range (ids must be 0..2147483647)");
        }
        return static_cast<int32_t>(id);
    }

    void read_document(const json& doc, BpeTokenizer& tokenizer) const {
        if (!doc.is_object()) fail("the document is not a JSON object");
        read_model(require(doc, "model", "the document"), tokenizer);
        if (const json* added = find(doc, "added_tokens")) read_added_tokens(*added, tokenizer);
        if (const json* normalizer = find(doc, "normalizer")) read_normalizer(*normalizer, tokenizer);
        tokenizer.pre_tokenizer_ = read_pre_tokenizer(require(doc, "pre_tokenizer", "the document"));
        if (const json* decoder = find(doc, "decoder")) read_decoder(*decoder);
    }

    void read_model(const json& model, BpeTokenizer& tokenizer) const {
        if (!model.is_object()) fail("model must be an object");
        if (const json* type = find(model, "type"); type && *type != "BPE") {
            fail("model.type is " + type->dump() + "; only \"BPE\" is supported");
        }
        if (const json* dropout = find(model, "dropout"); dropout && !(dropout->is_number() && *dropout == 0)) {
            fail("model.dropout " + dropout->dump() + " is not supported (use null)");
        }
        for (const char* affix : {"continuing_subword_prefix", "end_of_word_suffix"}) {
            if (const json* value = find(model, affix); value && *value != "") {
                fail(std::string("model.") + affix + " " + value->dump() + " is not supported (use null)");
            }
        }
        if (optional_bool(model, "byte_fallback", false, "model")) {
            fail("model.byte_fallback true is not supported (a byte-level vocabulary needs no fallback)");
        }
        tokenizer.ignore_merges_ = optional_bool(model, "ignore_merges", false, "model");
        read_vocab(require(model, "vocab", "model"), tokenizer);
        read_merges(require(model, "merges", "model"), tokenizer);
    }

    void read_vocab(const json& vocab, BpeTokenizer& tokenizer) const {
        if (!vocab.is_object()) fail("model.vocab must be an object mapping token strings to ids");
        tokenizer.vocab_.reserve(vocab.size());
        for (const auto& [token, id] : vocab.items()) {
            tokenizer.vocab_.emplace(token, id_value(id, "model.vocab[" + quote(token) + "]"));
        }
    }

    void read_merges(const json& merges, BpeTokenizer& tokenizer) const {
        if (!merges.is_array()) fail("model.merges must be an array");
        tokenizer.merges_.reserve(merges.size());
        for (std::size_t rank = 0; rank < merges.size(); ++rank) {
            tokenizer.merges_.push_back(read_merge(merges[rank], "model.merges[" + std::to_string(rank) + "]"));
        }
    }

    // Older files write "left right"; newer ones ["left", "right"], which allows spaces in tokens.
    std::pair<std::string, std::string> read_merge(const json& merge, const std::string& where) const {
        if (merge.is_string()) {
            const auto& text = merge.get_ref<const std::string&>();
            const auto space = text.find(' ');
            if (space == std::string::npos || space == 0 || space + 1 == text.size() ||
                text.find(' ', space + 1) != std::string::npos) {
                fail(where + " = " + merge.dump() + " is not of the form \"left right\"");
            }
            return {text.substr(0, space), text.substr(space + 1)};
        }
        if (merge.is_array() && merge.size() == 2 && merge[0].is_string() && merge[1].is_string()) {
            return {merge[0].get<std::string>(), merge[1].get<std::string>()};
        }
        fail(where + " = " + merge.dump() + " is neither \"left right\" nor [\"left\", \"right\"]");
    }

    void read_added_tokens(const json& added_tokens, BpeTokenizer& tokenizer) const {
        if (!added_tokens.is_array()) fail("added_tokens must be an array");
        for (std::size_t i = 0; i < added_tokens.size(); ++i) {
            const json& entry = added_tokens[i];
            const std::string where = "added_tokens[" + std::to_string(i) + "]";
            if (!entry.is_object()) fail(where + " must be an object");
            AddedToken added;
            added.id = id_value(require(entry, "id", where), where + ".id");
            const json& content = require(entry, "content", where);
            if (!content.is_string() || content.get_ref<const std::string&>().empty()) {
                fail(where + ".content must be a non-empty string");
            }
            added.content = content.get<std::string>();
            added.special = optional_bool(entry, "special", false, where);
            added.single_word = optional_bool(entry, "single_word", false, where);
            added.lstrip = optional_bool(entry, "lstrip", false, where);
            added.rstrip = optional_bool(entry, "rstrip", false, where);
            added.normalized = optional_bool(entry, "normalized", !added.special, where);
            tokenizer.added_tokens_.push_back(std::move(added));
        }
    }

    void read_normalizer(const json& normalizer, BpeTokenizer& tokenizer) const {
        const std::string type = type_of(normalizer);
        if (type == "NFC") {
            tokenizer.nfc_normalizer_ = true;
            return;
        }
        const json* steps = find(normalizer, "normalizers");
        if (type == "Sequence" && steps && steps->is_array() && steps->empty()) return;
        fail("unsupported normalizer " + normalizer.dump() + " (supported: null, NFC)");
    }

    // ByteLevel must not add a prefix space: decode would then return text with an extra space.
    void check_byte_level(const json& step, bool use_regex) const {
        if (optional_bool(step, "add_prefix_space", true, "pre_tokenizer ByteLevel")) {
            fail("pre_tokenizer ByteLevel with add_prefix_space true is not supported");
        }
        if (optional_bool(step, "use_regex", true, "pre_tokenizer ByteLevel") != use_regex) {
            fail(std::string("pre_tokenizer ByteLevel must have use_regex ") + (use_regex ? "true" : "false") +
                 " in this position");
        }
    }

    PreTokenizer split_kind(const json& split) const {
        const json* pattern = find(split, "pattern");
        const json* regex = pattern && pattern->is_object() ? find(*pattern, "Regex") : nullptr;
        if (regex == nullptr || !regex->is_string()) fail("pre_tokenizer Split needs a {\"Regex\": ...} pattern");
        const json* behavior = find(split, "behavior");
        if (behavior == nullptr || *behavior != "Isolated" || optional_bool(split, "invert", false, "Split")) {
            fail("pre_tokenizer Split must have behavior \"Isolated\" and invert false");
        }
        const auto& text = regex->get_ref<const std::string&>();
        if (text == kLlama3Pattern) return PreTokenizer::Llama3;
        if (text == kQwen2Pattern) return PreTokenizer::Qwen2;
        if (text == kGpt2Pattern) return PreTokenizer::Gpt2;
        fail("unsupported pre_tokenizer Split regex " + regex->dump() +
             " (supported: the GPT-2, Llama 3 and Qwen2 patterns)");
    }

    PreTokenizer read_pre_tokenizer(const json& pre_tokenizer) const {
        std::vector<const json*> steps;
        if (type_of(pre_tokenizer) == "Sequence") {
            const json* list = find(pre_tokenizer, "pretokenizers");
            if (list == nullptr || !list->is_array()) fail("pre_tokenizer Sequence lacks its 'pretokenizers' array");
            for (const json& step : *list) steps.push_back(&step);
        } else {
            steps.push_back(&pre_tokenizer);
        }
        std::vector<std::string> types;
        for (const json* step : steps) types.push_back(type_of(*step));
        if (types == std::vector<std::string>{"ByteLevel"}) {
            check_byte_level(*steps[0], true);
            return PreTokenizer::Gpt2;
        }
        if (types == std::vector<std::string>{"Split", "ByteLevel"}) {
            check_byte_level(*steps[1], false);
            return split_kind(*steps[0]);
        }
        if (types == std::vector<std::string>{"Digits", "ByteLevel"}) {
            if (!optional_bool(*steps[0], "individual_digits", false, "pre_tokenizer Digits")) {
                fail("pre_tokenizer Digits must have individual_digits true");
            }
            check_byte_level(*steps[1], true);
            return PreTokenizer::Gpt2IsolatedDigits;
        }
        fail("unsupported pre_tokenizer " + describe_steps(pre_tokenizer, steps) +
             " (supported: ByteLevel, Sequence[Split, ByteLevel], Sequence[Digits, ByteLevel])");
    }

    void read_decoder(const json& decoder) const {
        if (type_of(decoder) != "ByteLevel") fail("unsupported decoder " + decoder.dump() + " (supported: ByteLevel)");
    }
};

BpeTokenizer BpeTokenizer::from_json(const std::string& json_text, const std::string& source) {
    const JsonReader reader{source};
    BpeTokenizer tokenizer;
    try {
        reader.read_document(json::parse(json_text), tokenizer);
    } catch (const json::exception& e) {
        reader.fail(std::string("invalid tokenizer JSON: ") + e.what());
    }
    tokenizer.build(source);
    return tokenizer;
}

BpeTokenizer BpeTokenizer::from_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw ModelError(error_at(path, 0, "cannot open tokenizer file"));
    std::ostringstream text;
    text << in.rdbuf();
    if (in.bad()) throw ModelError(error_at(path, 0, "cannot read tokenizer file"));
    return from_json(text.str(), path);
}

// ---------------------------------------------------------------- writing

std::string BpeTokenizer::to_json() const {
    std::vector<std::pair<int32_t, const std::string*>> by_id;
    by_id.reserve(vocab_.size());
    for (const auto& [token, id] : vocab_) by_id.emplace_back(id, &token);
    std::sort(by_id.begin(), by_id.end());
    std::vector<const AddedToken*> added;
    for (const AddedToken& token : added_tokens_) added.push_back(&token);
    std::sort(added.begin(), added.end(), [](const AddedToken* a, const AddedToken* b) { return a->id < b->id; });
    // The compact "left right" merge form is ambiguous when a token holds a space.
    const bool merges_as_arrays = std::any_of(merges_.begin(), merges_.end(), [](const auto& merge) {
        return merge.first.find(' ') != std::string::npos || merge.second.find(' ') != std::string::npos;
    });

    try {
        std::string out = "{\n  \"version\": \"1.0\",\n  \"truncation\": null,\n  \"padding\": null,\n";
        out += "  \"added_tokens\": [";
        for (std::size_t i = 0; i < added.size(); ++i) {
            const ordered_json entry{{"id", added[i]->id},           {"content", added[i]->content},
                                     {"single_word", added[i]->single_word}, {"lstrip", added[i]->lstrip},
                                     {"rstrip", added[i]->rstrip},   {"normalized", added[i]->normalized},
                                     {"special", added[i]->special}};
            out += (i ? ",\n    " : "\n    ") + nested_dump(entry, 2);
        }
        out += added.empty() ? "],\n" : "\n  ],\n";
        out += "  \"normalizer\": " + std::string(nfc_normalizer_ ? "{\n    \"type\": \"NFC\"\n  }" : "null") + ",\n";
        out += "  \"pre_tokenizer\": " + nested_dump(pre_tokenizer_json(pre_tokenizer_), 1) + ",\n";
        out += "  \"post_processor\": null,\n";
        ordered_json decoder{{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true},
                             {"use_regex", true}};
        out += "  \"decoder\": " + nested_dump(decoder, 1) + ",\n";
        out += "  \"model\": {\n    \"type\": \"BPE\",\n    \"dropout\": null,\n    \"unk_token\": null,\n"
               "    \"continuing_subword_prefix\": null,\n    \"end_of_word_suffix\": null,\n"
               "    \"fuse_unk\": false,\n    \"byte_fallback\": false,\n";
        out += std::string("    \"ignore_merges\": ") + (ignore_merges_ ? "true" : "false") + ",\n";
        out += "    \"vocab\": {";
        for (std::size_t i = 0; i < by_id.size(); ++i) {
            out += (i ? ",\n      " : "\n      ") + quote(*by_id[i].second) + ": " + std::to_string(by_id[i].first);
        }
        out += by_id.empty() ? "},\n" : "\n    },\n";
        out += "    \"merges\": [";
        for (std::size_t i = 0; i < merges_.size(); ++i) {
            const auto& [left, right] = merges_[i];
            out += i ? ",\n      " : "\n      ";
            out += merges_as_arrays ? "[" + quote(left) + ", " + quote(right) + "]" : quote(left + " " + right);
        }
        out += merges_.empty() ? "]\n" : "\n    ]\n";
        out += "  }\n}\n";
        return out;
    } catch (const json::exception& e) {
        throw ModelError(std::string("BpeTokenizer::to_json: a token is not valid UTF-8: ") + e.what());
    }
}

void BpeTokenizer::save(const std::string& path) const {
    const std::string text = to_json();
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    if (!out) throw IoError(error_at(path, 0, "cannot create tokenizer file"));
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
    out.close();
    if (!out) throw IoError(error_at(path, 0, "cannot write tokenizer file"));
}

}  // namespace h2tune
