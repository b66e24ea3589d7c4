#include "unicode.h"

#include <algorithm>
#include <array>

namespace h2tune::tokenizer_detail {
namespace {

constexpr Utf8Char kInvalidByte(unsigned char byte) { return Utf8Char{byte, 1, false}; }

bool is_continuation(unsigned char byte) { return (byte & 0xC0) == 0x80; }

// Second-byte bounds from the Unicode "well-formed UTF-8" table; they exclude overlong forms,
// surrogates and code points above U+10FFFF in one comparison.
struct LeadInfo {
    uint8_t length;
    unsigned char second_min, second_max;
};

LeadInfo lead_info(unsigned char lead) {
    if (lead >= 0xC2 && lead <= 0xDF) return {2, 0x80, 0xBF};
    if (lead == 0xE0) return {3, 0xA0, 0xBF};
    if (lead == 0xED) return {3, 0x80, 0x9F};
    if (lead >= 0xE1 && lead <= 0xEF) return {3, 0x80, 0xBF};
    if (lead == 0xF0) return {4, 0x90, 0xBF};
    if (lead >= 0xF1 && lead <= 0xF3) return {4, 0x80, 0xBF};
    if (lead == 0xF4) return {4, 0x80, 0x8F};
    return {0, 0, 0};
}

std::array<CharClass, 128> make_ascii_classes() {
    std::array<CharClass, 128> classes{};
    for (int c = 0; c < 128; ++c) {
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) {
            classes[c] = CharClass::Letter;
        } else if (c >= '0' && c <= '9') {
            classes[c] = CharClass::Number;
        } else if (c == ' ' || (c >= 0x09 && c <= 0x0D)) {
            classes[c] = CharClass::Space;
        } else {
            classes[c] = CharClass::Other;
        }
    }
    return classes;
}

bool is_non_ascii_white_space(uint32_t cp) {
    return cp == 0x85 || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 ||
           cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

}  // namespace

Utf8Char decode_utf8(std::string_view text, std::size_t pos) {
    const auto lead = static_cast<unsigned char>(text[pos]);
    if (lead < 0x80) return Utf8Char{lead, 1, true};
    const LeadInfo info = lead_info(lead);
    if (info.length == 0 || pos + info.length > text.size()) return kInvalidByte(lead);
    const auto second = static_cast<unsigned char>(text[pos + 1]);
    if (second < info.second_min || second > info.second_max) return kInvalidByte(lead);
    uint32_t cp = lead & (0xFF >> (info.length + 1));
    cp = (cp << 6) | (second & 0x3F);
    for (std::size_t i = 2; i < info.length; ++i) {
        const auto next = static_cast<unsigned char>(text[pos + i]);
        if (!is_continuation(next)) return kInvalidByte(lead);
        cp = (cp << 6) | (next & 0x3F);
    }
    return Utf8Char{cp, info.length, true};
}

CharClass classify(uint32_t code_point) {
    static const std::array<CharClass, 128> ascii = make_ascii_classes();
    if (code_point < 128) return ascii[code_point];
    if (is_non_ascii_white_space(code_point)) return CharClass::Space;
    const CodePointRange* begin = kLetterNumberRanges;
    const CodePointRange* end = kLetterNumberRanges + kLetterNumberRangeCount;
    const CodePointRange* it = std::upper_bound(
        begin, end, code_point, [](uint32_t cp, const CodePointRange& range) { return cp < range.first; });
    if (it == begin) return CharClass::Other;
    --it;
    return code_point <= it->last ? it->cls : CharClass::Other;
}

void append_utf8(uint32_t cp, std::string& out) {
    if (cp < 0x80) {
        out += static_cast<char>(cp);
    } else if (cp < 0x800) {
        out += static_cast<char>(0xC0 | (cp >> 6));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        out += static_cast<char>(0xE0 | (cp >> 12));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
        out += static_cast<char>(0xF0 | (cp >> 18));
        out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    }
}

}  // namespace h2tune::tokenizer_detail
