#include "post_processor.h"

#include <limits>

namespace h2tune::tokenizer_detail {
namespace {

constexpr int32_t kSequence = -1;

int32_t read_id(const json& value, const std::string& path, const JsonContext& context) {
    if (!value.is_number_integer() || value.get<int64_t>() < 0 ||
        value.get<int64_t>() > std::numeric_limits<int32_t>::max()) {
        context.fail(path + " must be a token id, not " + value.dump());
    }
    return static_cast<int32_t>(value.get<int64_t>());
}

// ["[SEP]", 102] -> 102
int32_t read_token_pair(const json& spec, const char* key, const std::string& path, const JsonContext& context) {
    const json& pair = context.require(spec, key, path);
    if (!pair.is_array() || pair.size() != 2 || !pair[0].is_string()) {
        context.fail(join_path(path, key) + " must be [token, id]");
    }
    return read_id(pair[1], join_path(path, key) + "[1]", context);
}

}  // namespace

PostProcessor PostProcessor::from_json(const json& spec, const std::string& path, const JsonContext& context) {
    PostProcessor processor;
    const std::string type = context.type(spec, path);
    if (type == "ByteLevel") return processor;  // offsets only
    if (type == "Sequence") {
        const json& steps = context.require(spec, "processors", path);
        const std::string steps_path = join_path(path, "processors");
        if (!steps.is_array()) context.fail(steps_path + " must be an array");
        for (std::size_t i = 0; i < steps.size(); ++i) {
            processor.steps_.push_back(from_json(steps[i], index_path(steps_path, i), context));
        }
        return processor;
    }
    processor.has_template_ = true;
    if (type == "BertProcessing" || type == "RobertaProcessing") {
        processor.template_ = {read_token_pair(spec, "cls", path, context), kSequence,
                               read_token_pair(spec, "sep", path, context)};
        return processor;
    }
    if (type != "TemplateProcessing") context.unsupported_type(path, type);
    const json& single = context.require(spec, "single", path);
    const std::string single_path = join_path(path, "single");
    if (!single.is_array()) context.fail(single_path + " must be an array");
    const json* special_tokens = JsonContext::find(spec, "special_tokens");
    bool has_sequence = false;
    for (std::size_t i = 0; i < single.size(); ++i) {
        const std::string item_path = index_path(single_path, i);
        const json& item = single[i];
        if (const json* sequence = JsonContext::find(item, "Sequence")) {
            const std::string id = context.string(*sequence, "id", item_path + ".Sequence");
            if (id != "A") context.fail(item_path + ".Sequence.id '" + id + "' is not supported in a single template (use A)");
            processor.template_.push_back(kSequence);
            has_sequence = true;
        } else if (const json* special = JsonContext::find(item, "SpecialToken")) {
            const std::string name = context.string(*special, "id", item_path + ".SpecialToken");
            const json* entry = special_tokens ? JsonContext::find(*special_tokens, name.c_str()) : nullptr;
            if (entry == nullptr) {
                context.fail(item_path + ".SpecialToken.id '" + name + "' is not listed in " + path + ".special_tokens");
            }
            const std::string entry_path = join_path(path, "special_tokens") + "." + name;
            const json& ids = context.require(*entry, "ids", entry_path);
            if (!ids.is_array()) context.fail(entry_path + ".ids must be an array");
            for (std::size_t k = 0; k < ids.size(); ++k) {
                processor.template_.push_back(read_id(ids[k], index_path(entry_path + ".ids", k), context));
            }
        } else {
            context.fail(item_path + " must be {\"Sequence\": ...} or {\"SpecialToken\": ...}");
        }
    }
    // An empty template (seen in some files) means "no special tokens"; otherwise the sequence
    // must appear exactly once, where the encoded text goes.
    if (!single.empty() && !has_sequence) context.fail(single_path + " lacks the {\"Sequence\": {\"id\": \"A\"}} item");
    if (single.empty()) processor.has_template_ = false;
    return processor;
}

void PostProcessor::check_ids(int32_t vocab_size, const std::string& path, const JsonContext& context) const {
    for (int32_t id : template_) {
        if (id != kSequence && id >= vocab_size) {
            context.fail(path + " adds id " + std::to_string(id) + ", outside the vocabulary (" +
                         std::to_string(vocab_size) + " tokens)");
        }
    }
    for (std::size_t i = 0; i < steps_.size(); ++i) {
        steps_[i].check_ids(vocab_size, index_path(join_path(path, "processors"), i), context);
    }
}

std::vector<int32_t> PostProcessor::apply(std::vector<int32_t> ids) const {
    if (has_template_) {
        std::vector<int32_t> out;
        out.reserve(ids.size() + template_.size());
        for (int32_t item : template_) {
            if (item == kSequence) {
                out.insert(out.end(), ids.begin(), ids.end());
            } else {
                out.push_back(item);
            }
        }
        ids.swap(out);
    }
    for (const PostProcessor& step : steps_) ids = step.apply(std::move(ids));
    return ids;
}

}  // namespace h2tune::tokenizer_detail
