// What Hugging Face calls a Pattern and NormalizedString::split: find the matches of a literal
// string, a regex or a character predicate in a text as spans that cover it, then cut the text
// into pieces according to a split behaviour. Private to the tokenizer component.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "h2tune/tokenizer/bpe_tokenizer.h"
#include "json_context.h"
#include "regex.h"

namespace h2tune::tokenizer_detail {

enum class SplitBehavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous };

struct Span {
    std::size_t start, end;
    bool is_match;
};

class SplitPattern {
public:
    static SplitPattern literal(std::string text);
    // The GPT-2, Llama 3 and Qwen2 patterns run on hand-written matchers (same matches, much
    // faster); any other pattern on the regex engine. Throws RegexError.
    static SplitPattern regex(const std::string& pattern);
    static SplitPattern hand_written(BpeTokenizer::PreTokenizer kind);
    // Every character for which `predicate` holds is a match of its own.
    static SplitPattern predicate(bool (*predicate)(uint32_t));
    // \w+|[^\w\s]+ with the Rust regex crate's \w (Unicode Alphabetic, marks, decimal digits,
    // connector punctuation, Join_Control): Hugging Face's Whitespace pre-tokenizer uses that crate,
    // not Oniguruma.
    static SplitPattern word_runs();

    // Spans covering `text` in order, matches flagged; an empty text gives one empty non-match.
    std::vector<Span> find_matches(std::string_view text) const;
    // True (and the kind) for a hand-written matcher, which callers may run directly.
    bool is_hand_written(BpeTokenizer::PreTokenizer& kind) const {
        kind = hand_written_;
        return kind_ == Kind::HandWritten;
    }

private:
    enum class Kind { Literal, Regex, HandWritten, Predicate, WordRuns };
    Kind kind_ = Kind::Literal;
    std::string literal_;
    std::shared_ptr<const Regex> regex_;
    BpeTokenizer::PreTokenizer hand_written_ = BpeTokenizer::PreTokenizer::Gpt2;
    bool (*predicate_)(uint32_t) = nullptr;
};

// The byte ranges of the pieces, empty ones dropped (Hugging Face's split with `behavior`;
// `invert` swaps matches and non-matches first).
std::vector<std::pair<std::size_t, std::size_t>> split_spans(std::vector<Span> spans, SplitBehavior behavior,
                                                             bool invert);

// A {"String": ...} or {"Regex": ...} object at owner.pattern; errors name path.pattern.
SplitPattern read_split_pattern(const json& owner, const std::string& path, const JsonContext& context);

// The regex texts of the hand-written matchers.
extern const char* const kGpt2Pattern;
extern const char* const kLlama3Pattern;
extern const char* const kQwen2Pattern;

}  // namespace h2tune::tokenizer_detail
