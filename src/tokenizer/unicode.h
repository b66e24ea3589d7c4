// UTF-8 decoding and the character classes the pre-tokenizer regexes need (\p{L}, \p{N}, \s).
// Private to the tokenizer component.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace h2tune::tokenizer_detail {

enum class CharClass : uint8_t { Other, Letter, Number, Space };

struct CodePointRange {
    uint32_t first, last;
    CharClass cls;
};
extern const CodePointRange kLetterNumberRanges[];
extern const std::size_t kLetterNumberRangeCount;

// One decoded character. Invalid UTF-8 (stray continuation bytes, truncated or overlong sequences,
// surrogates, > U+10FFFF) yields a one-byte character of class Other with `valid` false, so every
// byte string splits into characters and nothing is ever dropped.
struct Utf8Char {
    uint32_t code_point;
    uint8_t length;  // bytes, 1..4
    bool valid;
};

// Decodes the character starting at `text[pos]`; pos < text.size().
Utf8Char decode_utf8(std::string_view text, std::size_t pos);

// Exact for ASCII; from the generated general-category tables for the rest. Whitespace is the
// Unicode White_Space property (what \s means in Oniguruma and Rust regex).
CharClass classify(uint32_t code_point);

inline bool is_valid_utf8(std::string_view text) {
    for (std::size_t pos = 0; pos < text.size();) {
        const Utf8Char c = decode_utf8(text, pos);
        if (!c.valid) return false;
        pos += c.length;
    }
    return true;
}

void append_utf8(uint32_t code_point, std::string& out);

}  // namespace h2tune::tokenizer_detail
