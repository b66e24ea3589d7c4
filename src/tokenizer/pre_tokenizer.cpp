#include "pre_tokenizer.h"

namespace h2tune::tokenizer_detail {
namespace {

bool is_newline(uint32_t cp) { return cp == '\r' || cp == '\n'; }

char ascii_lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

}  // namespace

PieceIterator::Char PieceIterator::char_at(std::size_t pos) const {
    const Utf8Char c = decode_utf8(text_, pos);
    return Char{c.code_point, c.length, c.valid ? classify(c.code_point) : CharClass::Other};
}

std::size_t PieceIterator::run_end(std::size_t pos, std::size_t limit, CharClass cls, std::size_t max_chars) const {
    for (std::size_t taken = 0; pos < limit && taken < max_chars; ++taken) {
        const Char c = char_at(pos);
        if (c.cls != cls) break;
        pos += c.length;
    }
    return pos;
}

std::size_t PieceIterator::newline_run_end(std::size_t pos, std::size_t limit) const {
    while (pos < limit && is_newline(static_cast<unsigned char>(text_[pos]))) ++pos;
    return pos;
}

// 's|'t|'re|'ve|'m|'ll|'d, optionally case-insensitive (Llama 3's (?i:...)). Returns pos if none.
std::size_t PieceIterator::contraction_end(std::size_t pos, std::size_t limit, bool ignore_case) const {
    static constexpr std::string_view kSuffixes[] = {"s", "t", "re", "ve", "m", "ll", "d"};
    const std::size_t start = pos + 1;  // after the apostrophe
    for (std::string_view suffix : kSuffixes) {
        if (start + suffix.size() > limit) continue;
        bool match = true;
        for (std::size_t i = 0; i < suffix.size() && match; ++i) {
            const char c = text_[start + i];
            match = (ignore_case ? ascii_lower(c) : c) == suffix[i];
        }
        if (match) return start + suffix.size();
    }
    // Case folding also maps U+017F LATIN SMALL LETTER LONG S to 's'.
    if (ignore_case && start + 2 <= limit && text_.substr(start, 2) == "\xC5\xBF") return start + 2;
    return pos;
}

// The whitespace alternatives: (Llama 3 only) \s*[\r\n]+ , then \s+(?!\S) , then \s+ .
std::size_t PieceIterator::whitespace_piece_end(std::size_t pos, std::size_t limit, bool split_after_newline) const {
    std::size_t end = pos;
    std::size_t last_start = pos;        // start of the run's last character
    std::size_t after_last_newline = 0;  // 0: no CR/LF in the run
    while (end < limit) {
        const Char c = char_at(end);
        if (c.cls != CharClass::Space) break;
        last_start = end;
        end += c.length;
        if (is_newline(c.code_point)) after_last_newline = end;
    }
    // \s*[\r\n]+ backtracks \s* to the run's last newline, so the match ends right after it.
    if (split_after_newline && after_last_newline != 0) return after_last_newline;
    // \s+(?!\S) gives back the last whitespace character when a non-space follows, so that
    // character can prefix the next word (" ?\p{L}+"); a lone space falls through to \s+.
    if (end < limit && last_start > pos) return last_start;
    return end;
}

// 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
std::size_t PieceIterator::gpt2_piece_end(std::size_t pos, std::size_t limit) const {
    const Char c = char_at(pos);
    if (c.code_point == '\'') {
        const std::size_t end = contraction_end(pos, limit, false);
        if (end != pos) return end;
    }
    std::size_t body = pos;
    CharClass cls = c.cls;
    if (c.code_point == ' ' && pos + 1 < limit) {
        const Char next = char_at(pos + 1);
        if (next.cls != CharClass::Space) {
            body = pos + 1;
            cls = next.cls;
        }
    }
    if (cls != CharClass::Space) return run_end(body, limit, cls);
    return whitespace_piece_end(pos, limit, false);
}

// Llama 3 (max_digits 3) and Qwen2 (max_digits 1):
// (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
std::size_t PieceIterator::llama3_piece_end(std::size_t pos, std::size_t max_digits) const {
    const std::size_t limit = text_.size();
    const Char c = char_at(pos);
    if (c.code_point == '\'') {
        const std::size_t end = contraction_end(pos, limit, true);
        if (end != pos) return end;
    }
    if (c.cls == CharClass::Letter) return run_end(pos, limit, CharClass::Letter);
    const std::size_t after = pos + c.length;
    const bool can_prefix = c.cls != CharClass::Number && !is_newline(c.code_point);
    if (can_prefix && after < limit && char_at(after).cls == CharClass::Letter) {
        return run_end(after, limit, CharClass::Letter);
    }
    if (c.cls == CharClass::Number) return run_end(pos, limit, CharClass::Number, max_digits);
    if (c.code_point == ' ' && after < limit && char_at(after).cls == CharClass::Other) {
        return newline_run_end(run_end(after, limit, CharClass::Other), limit);
    }
    if (c.cls == CharClass::Other) return newline_run_end(run_end(pos, limit, CharClass::Other), limit);
    return whitespace_piece_end(pos, limit, true);
}

std::size_t PieceIterator::next_digit(std::size_t pos) const {
    while (pos < text_.size()) {
        const Char c = char_at(pos);
        if (c.cls == CharClass::Number) break;
        pos += c.length;
    }
    return pos;
}

bool PieceIterator::next(std::string_view& piece) {
    if (pos_ >= text_.size()) return false;
    std::size_t end = pos_;
    switch (kind_) {
        case BpeTokenizer::PreTokenizer::Gpt2:
            end = gpt2_piece_end(pos_, text_.size());
            break;
        case BpeTokenizer::PreTokenizer::Llama3:
            end = llama3_piece_end(pos_, 3);
            break;
        case BpeTokenizer::PreTokenizer::Qwen2:
            end = llama3_piece_end(pos_, 1);
            break;
        case BpeTokenizer::PreTokenizer::Gpt2IsolatedDigits:
            // Digits(individual_digits) runs first: every digit is a piece of its own and the GPT-2
            // regex sees the digit-free stretches as separate texts.
            if (pos_ >= stretch_end_) {
                const Char c = char_at(pos_);
                if (c.cls == CharClass::Number) {
                    end = pos_ + c.length;
                    break;
                }
                stretch_end_ = next_digit(pos_);
            }
            end = gpt2_piece_end(pos_, stretch_end_);
            break;
    }
    piece = text_.substr(pos_, end - pos_);
    pos_ = end;
    return true;
}

}  // namespace h2tune::tokenizer_detail
