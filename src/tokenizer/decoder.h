// tokenizer.json "decoder": turns the token strings of an id sequence back into text. ByteLevel,
// ByteFallback, Fuse, Strip, Replace, Metaspace and Sequence, with Hugging Face's semantics (each
// step maps a list of strings to a list of strings; the results are concatenated). Without a
// decoder the tokens are joined with spaces, as Hugging Face does. Private to the tokenizer
// component.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "json_context.h"
#include "split_pattern.h"

namespace h2tune::tokenizer_detail {

class Decoder {
public:
    static Decoder from_json(const json& spec, const std::string& path, const JsonContext& context);
    static Decoder none();

    std::string decode(std::vector<std::string> tokens) const;

private:
    enum class Kind { None, ByteLevel, ByteFallback, Fuse, Strip, Replace, Metaspace, Sequence };
    void decode_chain(std::vector<std::string>& tokens) const;

    Kind kind_ = Kind::None;
    std::string content_;  // Strip: the character; Replace: the replacement; Metaspace: replacement
    std::size_t strip_start_ = 0, strip_stop_ = 0;
    bool metaspace_strip_first_ = true;  // prepend_scheme != never
    std::shared_ptr<const SplitPattern> pattern_;
    std::vector<Decoder> steps_;
};

}  // namespace h2tune::tokenizer_detail
