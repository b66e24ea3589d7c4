// tokenizer.json "pre_tokenizer": the steps that cut normalized text into the pieces the model
// encodes one by one. Split (literal or regex pattern, every behaviour, invert), ByteLevel,
// Digits, Metaspace, Whitespace, WhitespaceSplit, Punctuation, BertPreTokenizer,
// CharDelimiterSplit and Sequence. ByteLevel, when present, must be the last step: its byte
// mapping is then done by the model (a byte -> id table) instead of on strings. Private to the
// tokenizer component.
#pragma once

#include <functional>
#include <memory>
#include <string_view>
#include <string>
#include <vector>

#include "json_context.h"
#include "split_pattern.h"

namespace h2tune::tokenizer_detail {

struct Piece {
    std::string text;
    bool at_input_start;  // begins at offset 0 of the input (Metaspace's prepend_scheme "first")
};

class PreTokenization {
public:
    PreTokenization() = default;  // no pre-tokenizer: each stretch of text is one piece
    static PreTokenization from_json(const json& spec, const std::string& path, const JsonContext& context);

    void apply(std::vector<Piece>& pieces) const;
    // apply, then `emit` for each non-empty piece; the last step hands out views instead of
    // copies (the hot path of encode).
    void emit_pieces(std::vector<Piece>& pieces, const std::function<void(std::string_view)>& emit) const;
    // A ByteLevel step ends the sequence: pieces are raw bytes to map through the byte alphabet.
    bool byte_level() const { return byte_level_; }

    enum class PrependScheme { First, Always, Never };

private:
    struct Step {
        enum class Kind { Split, ByteLevel, Metaspace } kind = Kind::Split;
        std::shared_ptr<const SplitPattern> pattern;
        SplitBehavior behavior = SplitBehavior::Isolated;
        bool invert = false;
        bool add_prefix_space = false;  // ByteLevel
        bool use_regex = true;          // ByteLevel
        std::string replacement;        // Metaspace
        PrependScheme prepend_scheme = PrependScheme::Always;
        bool split = true;              // Metaspace
    };
    void read_step(const json& spec, const std::string& path, const JsonContext& context, bool last);
    static void split_pieces(std::vector<Piece>& pieces, const SplitPattern& pattern, SplitBehavior behavior,
                             bool invert);
    void apply_step(const Step& step, std::vector<Piece>& pieces) const;

    std::vector<Step> steps_;
    bool byte_level_ = false;
};

// The tokenizer.json pre_tokenizer (compact JSON) of a hand-written kind, as from_parts writes it.
std::string pre_tokenizer_json(BpeTokenizer::PreTokenizer kind);

}  // namespace h2tune::tokenizer_detail
