#include "split_pattern.h"

#include <algorithm>

#include "pre_tokenizer.h"
#include "unicode.h"

namespace h2tune::tokenizer_detail {

const char* const kGpt2Pattern = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
const char* const kLlama3Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
const char* const kQwen2Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

SplitPattern SplitPattern::literal(std::string text) {
    SplitPattern pattern;
    pattern.kind_ = Kind::Literal;
    pattern.literal_ = std::move(text);
    return pattern;
}

SplitPattern SplitPattern::regex(const std::string& text) {
    if (text == kGpt2Pattern) return hand_written(BpeTokenizer::PreTokenizer::Gpt2);
    if (text == kLlama3Pattern) return hand_written(BpeTokenizer::PreTokenizer::Llama3);
    if (text == kQwen2Pattern) return hand_written(BpeTokenizer::PreTokenizer::Qwen2);
    SplitPattern pattern;
    pattern.kind_ = Kind::Regex;
    pattern.regex_ = std::make_shared<const Regex>(text);
    return pattern;
}

SplitPattern SplitPattern::hand_written(BpeTokenizer::PreTokenizer kind) {
    SplitPattern pattern;
    pattern.kind_ = Kind::HandWritten;
    pattern.hand_written_ = kind;
    return pattern;
}

SplitPattern SplitPattern::predicate(bool (*predicate)(uint32_t)) {
    SplitPattern pattern;
    pattern.kind_ = Kind::Predicate;
    pattern.predicate_ = predicate;
    return pattern;
}

SplitPattern SplitPattern::word_runs() {
    SplitPattern pattern;
    pattern.kind_ = Kind::WordRuns;
    return pattern;
}

namespace {

enum class RunClass { Word, Space, Other };

RunClass run_class(const Utf8Char& c) {
    if (!c.valid) return RunClass::Other;
    if (is_white_space(c.code_point)) return RunClass::Space;
    return is_rust_word_char(c.code_point) ? RunClass::Word : RunClass::Other;
}

}  // namespace

std::vector<Span> SplitPattern::find_matches(std::string_view text) const {
    std::vector<Span> spans;
    if (text.empty()) {
        spans.push_back(Span{0, 0, false});
        return spans;
    }
    auto add_match = [&](std::size_t& previous_end, std::size_t start, std::size_t end) {
        if (previous_end != start) spans.push_back(Span{previous_end, start, false});
        spans.push_back(Span{start, end, true});
        previous_end = end;
    };
    std::size_t previous_end = 0;
    switch (kind_) {
        case Kind::Literal: {
            if (literal_.empty()) break;  // nothing matches
            for (std::size_t at = text.find(literal_); at != std::string_view::npos;
                 at = text.find(literal_, at + literal_.size())) {
                add_match(previous_end, at, at + literal_.size());
            }
            break;
        }
        case Kind::Regex:
            for (const auto& [start, end] : regex_->find_all(text)) add_match(previous_end, start, end);
            break;
        case Kind::HandWritten:
            // These patterns match every character, so the pieces are the matches.
            for_each_piece(text, hand_written_, [&](std::string_view piece) {
                const auto start = static_cast<std::size_t>(piece.data() - text.data());
                add_match(previous_end, start, start + piece.size());
            });
            break;
        case Kind::WordRuns:
            for (std::size_t pos = 0; pos < text.size();) {
                const Utf8Char first = decode_utf8(text, pos);
                const RunClass cls = run_class(first);
                std::size_t end = pos + first.length;
                while (end < text.size()) {
                    const Utf8Char c = decode_utf8(text, end);
                    if (run_class(c) != cls) break;
                    end += c.length;
                }
                if (cls != RunClass::Space) add_match(previous_end, pos, end);
                pos = end;
            }
            break;
        case Kind::Predicate:
            for (std::size_t pos = 0; pos < text.size();) {
                const Utf8Char c = decode_utf8(text, pos);
                if (c.valid && predicate_(c.code_point)) add_match(previous_end, pos, pos + c.length);
                pos += c.length;
            }
            break;
    }
    if (previous_end != text.size()) spans.push_back(Span{previous_end, text.size(), false});
    return spans;
}

std::vector<std::pair<std::size_t, std::size_t>> split_spans(std::vector<Span> spans, SplitBehavior behavior,
                                                             bool invert) {
    if (invert) {
        for (Span& span : spans) span.is_match = !span.is_match;
    }
    std::vector<Span> merged;
    bool previous_match = false;
    switch (behavior) {
        case SplitBehavior::Isolated:
            merged = std::move(spans);
            break;
        case SplitBehavior::Removed:
            for (const Span& span : spans) {
                if (!span.is_match) merged.push_back(span);
            }
            break;
        case SplitBehavior::MergedWithPrevious:
            for (const Span& span : spans) {
                if (span.is_match && !previous_match && !merged.empty()) {
                    merged.back().end = span.end;
                } else {
                    merged.push_back(span);
                }
                previous_match = span.is_match;
            }
            break;
        case SplitBehavior::MergedWithNext:
            for (auto it = spans.rbegin(); it != spans.rend(); ++it) {
                if (it->is_match && !previous_match && !merged.empty()) {
                    merged.back().start = it->start;
                } else {
                    merged.push_back(*it);
                }
                previous_match = it->is_match;
            }
            std::reverse(merged.begin(), merged.end());
            break;
        case SplitBehavior::Contiguous:
            for (const Span& span : spans) {
                if (span.is_match == previous_match && !merged.empty()) {
                    merged.back().end = span.end;
                } else {
                    merged.push_back(span);
                }
                previous_match = span.is_match;
            }
            break;
    }
    std::vector<std::pair<std::size_t, std::size_t>> pieces;
    pieces.reserve(merged.size());
    for (const Span& span : merged) {
        if (span.end > span.start) pieces.emplace_back(span.start, span.end);
    }
    return pieces;
}

SplitPattern read_split_pattern(const json& owner, const std::string& path, const JsonContext& context) {
    const json& pattern = context.require(owner, "pattern", path);
    const std::string pattern_path = join_path(path, "pattern");
    if (const json* literal = JsonContext::find(pattern, "String")) {
        if (!literal->is_string()) context.fail(pattern_path + ".String must be a string");
        return SplitPattern::literal(literal->get<std::string>());
    }
    if (const json* regex = JsonContext::find(pattern, "Regex")) {
        if (!regex->is_string()) context.fail(pattern_path + ".Regex must be a string");
        try {
            return SplitPattern::regex(regex->get<std::string>());
        } catch (const RegexError& e) {
            context.fail(pattern_path + ".Regex " + regex->dump() + ": " + e.what());
        }
    }
    context.fail(pattern_path + " must be {\"String\": ...} or {\"Regex\": ...}");
}

}  // namespace h2tune::tokenizer_detail
