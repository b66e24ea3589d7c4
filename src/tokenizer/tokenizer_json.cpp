// Reading and writing the Hugging Face tokenizer.json format.
#include <algorithm>
#include <fstream>
#include <limits>

#include <nlohmann/json.hpp>

#include "h2tune/core/error.h"
#include "h2tune/core/input_file.h"
#include "h2tune/tokenizer/bpe_tokenizer.h"
#include "json_context.h"

namespace h2tune {
namespace {

using json = nlohmann::json;
using ordered_json = nlohmann::ordered_json;

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
        // The components are parsed (and checked) by build(); here they are kept as JSON text.
        auto keep = [&](const char* key, std::string& out) {
            const json* value = find(doc, key);
            out = value ? value->dump() : "null";
        };
        keep("normalizer", tokenizer.normalizer_json_);
        keep("pre_tokenizer", tokenizer.pre_tokenizer_json_);
        keep("post_processor", tokenizer.post_processor_json_);
        keep("decoder", tokenizer.decoder_json_);
    }

    void read_model(const json& model, BpeTokenizer& tokenizer) const {
        if (!model.is_object()) fail("model must be an object");
        if (const json* type = find(model, "type"); type && *type != "BPE") {
            fail("model.type " + (type->is_string() ? "'" + type->get<std::string>() + "'" : type->dump()) +
                 " is not supported (only BPE)");
        }
        if (const json* dropout = find(model, "dropout"); dropout && !(dropout->is_number() && *dropout == 0)) {
            fail("model.dropout " + dropout->dump() + " is not supported (use null)");
        }
        for (const char* affix : {"continuing_subword_prefix", "end_of_word_suffix"}) {
            if (const json* value = find(model, affix); value && *value != "") {
                fail(std::string("model.") + affix + " " + value->dump() + " is not supported (use null)");
            }
        }
        tokenizer.byte_fallback_ = optional_bool(model, "byte_fallback", false, "model");
        tokenizer.fuse_unk_ = optional_bool(model, "fuse_unk", false, "model");
        if (const json* unk = find(model, "unk_token")) {
            if (!unk->is_string()) fail("model.unk_token must be a string or null");
            tokenizer.unk_token_ = unk->get<std::string>();
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

};

BpeTokenizer BpeTokenizer::from_json(const std::string& json_text, const std::string& source) {
    const JsonReader reader{source};
    if (json_nesting_depth(json_text) > tokenizer_detail::kMaxJsonDepth) {
        reader.fail("JSON nested deeper than " + std::to_string(tokenizer_detail::kMaxJsonDepth) +
                    " levels; not a tokenizer.json");
    }
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
    // The largest real tokenizer.json files (Gemma 3, 262k tokens) are about 35 MB.
    const InputFileRule rule{"tokenizer file", 256ull << 20};
    return from_json(read_input_file(path, rule, InputErrorKind::kModel), path);
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
        out += "  \"normalizer\": " + nested_dump(ordered_json::parse(normalizer_json_), 1) + ",\n";
        out += "  \"pre_tokenizer\": " + nested_dump(ordered_json::parse(pre_tokenizer_json_), 1) + ",\n";
        out += "  \"post_processor\": " + nested_dump(ordered_json::parse(post_processor_json_), 1) + ",\n";
        out += "  \"decoder\": " + nested_dump(ordered_json::parse(decoder_json_), 1) + ",\n";
        out += "  \"model\": {\n    \"type\": \"BPE\",\n    \"dropout\": null,\n";
        out += "    \"unk_token\": " + (unk_token_.empty() ? std::string("null") : quote(unk_token_)) + ",\n";
        out += "    \"continuing_subword_prefix\": null,\n    \"end_of_word_suffix\": null,\n";
        out += std::string("    \"fuse_unk\": ") + (fuse_unk_ ? "true" : "false") + ",\n";
        out += std::string("    \"byte_fallback\": ") + (byte_fallback_ ? "true" : "false") + ",\n";
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
