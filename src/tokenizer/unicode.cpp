#include "unicode.h"

#include <algorithm>
#include <array>
#include <utility>
#include <vector>

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

// Categories of the first planes in one array (most text lives there); the rest by binary search.
constexpr uint32_t kDirectCategoryLimit = 0x20000;

GeneralCategory search_category(uint32_t cp) {
    const CategoryRange* begin = kCategoryRanges;
    const CategoryRange* end = kCategoryRanges + kCategoryRangeCount;
    const CategoryRange* it =
        std::upper_bound(begin, end, cp, [](uint32_t value, const CategoryRange& range) { return value < range.first; });
    if (it == begin) return GeneralCategory::Cn;
    --it;
    return cp <= it->last ? it->category : GeneralCategory::Cn;
}

const std::vector<GeneralCategory>& direct_categories() {
    static const std::vector<GeneralCategory> table = [] {
        std::vector<GeneralCategory> out(kDirectCategoryLimit, GeneralCategory::Cn);
        for (std::size_t i = 0; i < kCategoryRangeCount; ++i) {
            const CategoryRange& range = kCategoryRanges[i];
            for (uint32_t cp = range.first; cp <= range.last && cp < kDirectCategoryLimit; ++cp) out[cp] = range.category;
        }
        return out;
    }();
    return table;
}

CharClass class_of_category(GeneralCategory category) {
    switch (category) {
        case GeneralCategory::Lu:
        case GeneralCategory::Ll:
        case GeneralCategory::Lt:
        case GeneralCategory::Lm:
        case GeneralCategory::Lo:
            return CharClass::Letter;
        case GeneralCategory::Nd:
        case GeneralCategory::Nl:
        case GeneralCategory::No:
            return CharClass::Number;
        default:
            return CharClass::Other;
    }
}

template <class Entry>
const Entry* find_entry(const Entry* table, std::size_t count, uint32_t cp) {
    const Entry* end = table + count;
    const Entry* it =
        std::lower_bound(table, end, cp, [](const Entry& entry, uint32_t value) { return entry.code_point < value; });
    return it != end && it->code_point == cp ? it : nullptr;
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

GeneralCategory general_category(uint32_t code_point) {
    if (code_point < kDirectCategoryLimit) return direct_categories()[code_point];
    return code_point <= 0x10FFFF ? search_category(code_point) : GeneralCategory::Cn;
}

CharClass classify(uint32_t code_point) {
    static const std::array<CharClass, 128> ascii = make_ascii_classes();
    if (code_point < 128) return ascii[code_point];
    if (is_non_ascii_white_space(code_point)) return CharClass::Space;
    return class_of_category(general_category(code_point));
}

bool is_white_space(uint32_t code_point) {
    return code_point == ' ' || (code_point >= 0x09 && code_point <= 0x0D) || is_non_ascii_white_space(code_point);
}

bool is_rust_word_char(uint32_t code_point) {
    switch (general_category(code_point)) {
        case GeneralCategory::Lu:
        case GeneralCategory::Ll:
        case GeneralCategory::Lt:
        case GeneralCategory::Lm:
        case GeneralCategory::Lo:
        case GeneralCategory::Mn:
        case GeneralCategory::Mc:
        case GeneralCategory::Me:
        case GeneralCategory::Nd:
        case GeneralCategory::Nl:
        case GeneralCategory::Pc:
            return true;
        default:
            return code_point == 0x200C || code_point == 0x200D || is_alphabetic_symbol(code_point);
    }
}

uint8_t combining_class(uint32_t code_point) {
    if (code_point < 0x300) return 0;
    const CombiningClassRange* begin = kCombiningClassRanges;
    const CombiningClassRange* end = kCombiningClassRanges + kCombiningClassRangeCount;
    const CombiningClassRange* it = std::upper_bound(
        begin, end, code_point, [](uint32_t cp, const CombiningClassRange& range) { return cp < range.first; });
    if (it == begin) return 0;
    --it;
    return code_point <= it->last ? it->combining_class : 0;
}

const MappingEntry* find_decomposition(uint32_t code_point) {
    if (code_point < 0xA0) return nullptr;
    return find_entry(kDecompositionIndex, kDecompositionCount, code_point);
}

uint32_t compose_pair(uint32_t first, uint32_t second) {
    const CompositionEntry* end = kCompositions + kCompositionCount;
    const CompositionEntry* it = std::lower_bound(kCompositions, end, std::make_pair(first, second),
                                                  [](const CompositionEntry& entry, std::pair<uint32_t, uint32_t> key) {
                                                      return std::make_pair(entry.first, entry.second) < key;
                                                  });
    return it != end && it->first == first && it->second == second ? it->composite : 0;
}

void append_lowercase(uint32_t code_point, std::string& out) {
    if (code_point < 128) {
        out += static_cast<char>(code_point >= 'A' && code_point <= 'Z' ? code_point + 32 : code_point);
        return;
    }
    const MappingEntry* entry = find_entry(kLowercaseIndex, kLowercaseCount, code_point);
    if (entry == nullptr) {
        append_utf8(code_point, out);
        return;
    }
    for (uint32_t i = 0; i < entry->length; ++i) append_utf8(kLowercaseData[entry->offset + i], out);
}

uint32_t simple_case_fold(uint32_t code_point) {
    if (code_point < 128) return code_point >= 'A' && code_point <= 'Z' ? code_point + 32 : code_point;
    const CaseFoldEntry* entry = find_entry(kCaseFolds, kCaseFoldCount, code_point);
    return entry != nullptr ? entry->folded : code_point;
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
