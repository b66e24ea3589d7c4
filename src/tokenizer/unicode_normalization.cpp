// Decompose (recursively, Hangul algorithmically), put combining marks in canonical order, then
// for the composed forms recombine each starter with the following unblocked marks.
#include "unicode_normalization.h"

#include <algorithm>
#include <vector>

#include "unicode.h"

namespace h2tune::tokenizer_detail {
namespace {

// An invalid input byte travels as this plus the byte value; it has combining class 0.
constexpr uint32_t kRawByteBase = 0x80000000u;

constexpr uint32_t kHangulBase = 0xAC00, kLeadBase = 0x1100, kVowelBase = 0x1161, kTrailBase = 0x11A7;
constexpr uint32_t kLeadCount = 19, kVowelCount = 21, kTrailCount = 28;
constexpr uint32_t kSyllableCount = kLeadCount * kVowelCount * kTrailCount;

void decompose(uint32_t cp, bool compatibility, std::vector<uint32_t>& out) {
    if (cp >= kHangulBase && cp < kHangulBase + kSyllableCount) {
        const uint32_t index = cp - kHangulBase;
        out.push_back(kLeadBase + index / (kVowelCount * kTrailCount));
        out.push_back(kVowelBase + (index % (kVowelCount * kTrailCount)) / kTrailCount);
        if (index % kTrailCount != 0) out.push_back(kTrailBase + index % kTrailCount);
        return;
    }
    const MappingEntry* entry = find_decomposition(cp);
    if (entry == nullptr || (entry->compatibility && !compatibility)) {
        out.push_back(cp);
        return;
    }
    for (uint32_t i = 0; i < entry->length; ++i) decompose(kDecompositionData[entry->offset + i], compatibility, out);
}

uint8_t combining_class_of(uint32_t value) { return value >= kRawByteBase ? 0 : combining_class(value); }

// Stable sort of each run of non-starters by combining class.
void canonical_order(std::vector<uint32_t>& chars) {
    std::size_t i = 0;
    while (i < chars.size()) {
        if (combining_class_of(chars[i]) == 0) {
            ++i;
            continue;
        }
        std::size_t end = i;
        while (end < chars.size() && combining_class_of(chars[end]) != 0) ++end;
        std::stable_sort(chars.begin() + static_cast<std::ptrdiff_t>(i), chars.begin() + static_cast<std::ptrdiff_t>(end),
                         [](uint32_t a, uint32_t b) { return combining_class_of(a) < combining_class_of(b); });
        i = end;
    }
}

uint32_t compose(uint32_t first, uint32_t second) {
    if (first >= kRawByteBase || second >= kRawByteBase) return 0;
    if (first >= kLeadBase && first < kLeadBase + kLeadCount && second >= kVowelBase &&
        second < kVowelBase + kVowelCount) {
        return kHangulBase + ((first - kLeadBase) * kVowelCount + (second - kVowelBase)) * kTrailCount;
    }
    if (first >= kHangulBase && first < kHangulBase + kSyllableCount && (first - kHangulBase) % kTrailCount == 0 &&
        second > kTrailBase && second < kTrailBase + kTrailCount) {
        return first + (second - kTrailBase);
    }
    return compose_pair(first, second);
}

void recompose(std::vector<uint32_t>& chars) {
    std::vector<uint32_t> out;
    out.reserve(chars.size());
    std::ptrdiff_t starter = -1;
    int last_class = -1;  // of the last character appended after the starter; -1: none yet
    for (uint32_t c : chars) {
        const int cls = combining_class_of(c);
        if (starter >= 0) {
            const bool blocked = last_class != -1 && (last_class == 0 || last_class >= cls);
            if (!blocked) {
                const uint32_t composite = compose(out[starter], c);
                if (composite != 0) {
                    out[starter] = composite;
                    continue;
                }
            }
        }
        if (cls == 0) {
            starter = static_cast<std::ptrdiff_t>(out.size());
            last_class = -1;
        } else {
            last_class = cls;
        }
        out.push_back(c);
    }
    chars.swap(out);
}

bool is_ascii(std::string_view text) {
    return std::all_of(text.begin(), text.end(), [](char c) { return static_cast<unsigned char>(c) < 0x80; });
}

}  // namespace

std::string normalize_unicode(std::string_view text, NormalForm form) {
    if (is_ascii(text)) return std::string(text);
    const bool compatibility = form == NormalForm::NFKC || form == NormalForm::NFKD;
    std::vector<uint32_t> chars;
    chars.reserve(text.size());
    for (std::size_t pos = 0; pos < text.size();) {
        const Utf8Char c = decode_utf8(text, pos);
        if (c.valid) {
            decompose(c.code_point, compatibility, chars);
        } else {
            chars.push_back(kRawByteBase + static_cast<unsigned char>(text[pos]));
        }
        pos += c.length;
    }
    canonical_order(chars);
    if (form == NormalForm::NFC || form == NormalForm::NFKC) recompose(chars);
    std::string out;
    out.reserve(text.size());
    for (uint32_t c : chars) {
        if (c >= kRawByteBase) {
            out += static_cast<char>(c - kRawByteBase);
        } else {
            append_utf8(c, out);
        }
    }
    return out;
}

std::string lowercase(std::string_view text) {
    std::string out;
    out.reserve(text.size());
    for (std::size_t pos = 0; pos < text.size();) {
        const Utf8Char c = decode_utf8(text, pos);
        if (c.valid) {
            append_lowercase(c.code_point, out);
        } else {
            out += text[pos];
        }
        pos += c.length;
    }
    return out;
}

}  // namespace h2tune::tokenizer_detail
