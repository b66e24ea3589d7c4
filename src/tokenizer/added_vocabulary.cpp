#include "added_vocabulary.h"

#include <algorithm>

#include "unicode.h"

namespace h2tune::tokenizer_detail {
namespace {

uint64_t edge_key(int32_t node, unsigned char byte) { return (static_cast<uint64_t>(node) << 8) | byte; }

// The last character of text[0, end) (valid UTF-8 assumed where it matters); 0 when none.
uint32_t char_before(std::string_view text, std::size_t end) {
    if (end == 0) return 0;
    std::size_t start = end - 1;
    while (start > 0 && end - start < 4 && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) --start;
    const Utf8Char c = decode_utf8(text, start);
    return c.valid && start + c.length == end ? c.code_point : 0;
}

// Offset where the white space ending at `end` begins (Rust's trim_end on text[0, end)).
std::size_t white_space_start_before(std::string_view text, std::size_t end) {
    std::size_t pos = end;
    while (pos > 0) {
        const uint32_t c = char_before(text, pos);
        if (c == 0 || !is_white_space(c)) break;
        std::string utf8;
        append_utf8(c, utf8);
        pos -= utf8.size();
    }
    return pos;
}

std::size_t white_space_end_after(std::string_view text, std::size_t pos) {
    while (pos < text.size()) {
        const Utf8Char c = decode_utf8(text, pos);
        if (!c.valid || !is_white_space(c.code_point)) break;
        pos += c.length;
    }
    return pos;
}

}  // namespace

void AddedTokenMatcher::add(std::string_view pattern, const AddedTokenRule& rule) {
    if (pattern.empty()) return;  // an empty normalized form matches nothing
    int32_t node = 0;
    for (char c : pattern) {
        const auto byte = static_cast<unsigned char>(c);
        const auto [it, inserted] = edges_.emplace(edge_key(node, byte), static_cast<int32_t>(nodes_.size()));
        if (inserted) nodes_.emplace_back();
        node = it->second;
    }
    if (nodes_[node].rule >= 0) return;  // the same text twice: the first token keeps it
    first_bytes_.set(static_cast<unsigned char>(pattern[0]));
    nodes_[node].rule = static_cast<int32_t>(rules_.size());
    rules_.push_back(rule);
}

int32_t AddedTokenMatcher::longest_at(std::string_view text, std::size_t pos, std::size_t& end) const {
    int32_t node = 0, found = -1;
    for (std::size_t i = pos; i < text.size(); ++i) {
        const auto it = edges_.find(edge_key(node, static_cast<unsigned char>(text[i])));
        if (it == edges_.end()) break;
        node = it->second;
        if (nodes_[node].rule >= 0) {
            found = nodes_[node].rule;
            end = i + 1;
        }
    }
    return found;
}

std::vector<Segment> AddedTokenMatcher::split(std::string_view text, bool match_special) const {
    std::vector<Segment> segments;
    std::size_t start_offset = 0;  // end of the last accepted token
    std::size_t pos = 0;
    while (pos < text.size() && !rules_.empty()) {
        if (!first_bytes_.test(static_cast<unsigned char>(text[pos]))) {
            ++pos;
            continue;
        }
        std::size_t stop = 0;
        const int32_t index = longest_at(text, pos, stop);
        if (index < 0) {
            ++pos;
            continue;
        }
        std::size_t start = pos;
        // The search resumes right after the match, even when it is discarded, and even when
        // rstrip below takes white space beyond it: like Hugging Face's Aho-Corasick iteration,
        // added tokens inside that white space are still found.
        pos = stop;
        const AddedTokenRule& rule = rules_[index];
        if (rule.special && !match_special) continue;
        if (rule.single_word) {  // no word character (Rust regex \w) may touch the token
            const uint32_t before = char_before(text, start);
            const Utf8Char after = stop < text.size() ? decode_utf8(text, stop) : Utf8Char{0, 1, false};
            const bool word_before = before != 0 && is_rust_word_char(before);
            const bool word_after = after.valid && is_rust_word_char(after.code_point);
            if (word_before || word_after) continue;
        }
        if (rule.lstrip) start = std::max(white_space_start_before(text, start), start_offset);
        if (rule.rstrip) stop = white_space_end_after(text, stop);
        if (start_offset < start) segments.push_back(Segment{start_offset, start, -1});
        segments.push_back(Segment{start, stop, rule.id});
        start_offset = stop;
    }
    if (start_offset < text.size()) segments.push_back(Segment{start_offset, text.size(), -1});
    return segments;
}

}  // namespace h2tune::tokenizer_detail
