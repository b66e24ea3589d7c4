// tokenizer.json "post_processor": the special tokens an encoding gets when special tokens are
// requested. TemplateProcessing (single sequences), BertProcessing, RobertaProcessing, ByteLevel
// (no ids of its own) and Sequence. Private to the tokenizer component.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "json_context.h"

namespace h2tune::tokenizer_detail {

class PostProcessor {
public:
    PostProcessor() = default;  // adds nothing
    static PostProcessor from_json(const json& spec, const std::string& path, const JsonContext& context);

    std::vector<int32_t> apply(std::vector<int32_t> ids) const;

    // Fails (through `context`) when an id this processor adds is not below `vocab_size`: the
    // file's post_processor names ids by number, and one past the vocabulary would reach the
    // model's embedding as an out-of-range index.
    void check_ids(int32_t vocab_size, const std::string& path, const JsonContext& context) const;

private:
    // The single-sequence template: ids before and after the sequence (-1 marks the sequence).
    std::vector<int32_t> template_;
    bool has_template_ = false;
    std::vector<PostProcessor> steps_;
};

}  // namespace h2tune::tokenizer_detail
