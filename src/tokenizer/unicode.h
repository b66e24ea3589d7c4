// UTF-8 decoding and the Unicode character data the tokenizer needs: general categories (regex
// classes, the pre-tokenizers' letter / number / space classes), combining classes,
// decompositions and compositions (normalizers), lowercase mappings and simple case folding.
// The tables come from unicode_tables.cpp (generated). Private to the tokenizer component.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace h2tune::tokenizer_detail {

// The order must match CATEGORIES in generate_unicode_tables.py.
enum class GeneralCategory : uint8_t {
    Cn, Lu, Ll, Lt, Lm, Lo, Mn, Mc, Me, Nd, Nl, No, Pc, Pd, Ps,
    Pe, Pi, Pf, Po, Sm, Sc, Sk, So, Zs, Zl, Zp, Cc, Cf, Cs, Co
};

enum class CharClass : uint8_t { Other, Letter, Number, Space };

struct CategoryRange {
    uint32_t first, last;
    GeneralCategory category;
};
struct CombiningClassRange {
    uint32_t first, last;
    uint8_t combining_class;
};
// Index into a flat array of code points: `length` values from `offset`.
struct MappingEntry {
    uint32_t code_point;
    uint8_t compatibility;  // decompositions only: 1 for a compatibility (NFK*) mapping
    uint32_t offset;
    uint32_t length;
};
struct CompositionEntry {
    uint32_t first, second, composite;
};
struct CaseFoldEntry {
    uint32_t code_point, folded;
};

extern const CategoryRange kCategoryRanges[];
extern const std::size_t kCategoryRangeCount;
extern const CombiningClassRange kCombiningClassRanges[];
extern const std::size_t kCombiningClassRangeCount;
extern const MappingEntry kDecompositionIndex[];
extern const std::size_t kDecompositionCount;
extern const uint32_t kDecompositionData[];
extern const CompositionEntry kCompositions[];
extern const std::size_t kCompositionCount;
extern const MappingEntry kLowercaseIndex[];
extern const std::size_t kLowercaseCount;
extern const uint32_t kLowercaseData[];
extern const CaseFoldEntry kCaseFolds[];
extern const std::size_t kCaseFoldCount;

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

GeneralCategory general_category(uint32_t code_point);  // Cn for unassigned and invalid values

// Letter (L*), Number (N*), Space (White_Space, what \s means in Oniguruma and Rust) or Other.
CharClass classify(uint32_t code_point);

// The Unicode White_Space property (Rust's char::is_whitespace).
bool is_white_space(uint32_t code_point);

// The symbols (So) with the Alphabetic property: circled and squared Latin letters.
inline bool is_alphabetic_symbol(uint32_t c) {
    return (c >= 0x24B6 && c <= 0x24E9) || (c >= 0x1F130 && c <= 0x1F149) || (c >= 0x1F150 && c <= 0x1F169) ||
           (c >= 0x1F170 && c <= 0x1F189);
}

// The Rust regex crate's \w (Unicode Alphabetic, marks, decimal digits, connector punctuation,
// Join_Control), which Hugging Face uses outside Oniguruma: the Whitespace pre-tokenizer and the
// single_word test of added tokens.
bool is_rust_word_char(uint32_t code_point);

uint8_t combining_class(uint32_t code_point);
// The one-step decomposition of a code point (Hangul excluded), or nullptr.
const MappingEntry* find_decomposition(uint32_t code_point);
// The primary composite of a canonical pair, or 0.
uint32_t compose_pair(uint32_t first, uint32_t second);
// Appends the lowercase mapping of one character (itself when it has none) as UTF-8.
void append_lowercase(uint32_t code_point, std::string& out);
uint32_t simple_case_fold(uint32_t code_point);

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
