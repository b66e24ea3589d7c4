#include "byte_level.h"

#include <array>
#include <cstdint>
#include <vector>

#include "h2tune/tokenizer/bpe_tokenizer.h"
#include "unicode.h"

namespace h2tune {
namespace {

// Printable Latin-1 bytes map to themselves; the 68 others (controls, space, NBSP, soft hyphen)
// map to U+0100.. in byte order, so every token string is visible, whitespace-free text.
std::array<uint32_t, 256> make_byte_code_points() {
    std::array<uint32_t, 256> code_points{};
    uint32_t next_extra = 256;
    for (uint32_t b = 0; b < 256; ++b) {
        const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        code_points[b] = printable ? b : next_extra++;
    }
    return code_points;
}

const std::array<uint32_t, 256>& byte_code_points() {
    static const std::array<uint32_t, 256> table = make_byte_code_points();
    return table;
}

constexpr uint32_t kMaxByteCodePoint = 256 + 68;

// Inverse map indexed by code point; -1 for characters outside the alphabet.
const std::array<int16_t, kMaxByteCodePoint>& code_point_bytes() {
    static const std::array<int16_t, kMaxByteCodePoint> table = [] {
        std::array<int16_t, kMaxByteCodePoint> inverse{};
        inverse.fill(-1);
        for (int b = 0; b < 256; ++b) inverse[byte_code_points()[b]] = static_cast<int16_t>(b);
        return inverse;
    }();
    return table;
}

}  // namespace

const std::vector<std::string>& BpeTokenizer::byte_to_unicode() {
    static const std::vector<std::string> strings = [] {
        std::vector<std::string> out(256);
        for (int b = 0; b < 256; ++b) tokenizer_detail::append_utf8(byte_code_points()[b], out[b]);
        return out;
    }();
    return strings;
}

namespace tokenizer_detail {

std::string bytes_to_byte_level(std::string_view bytes) {
    const std::vector<std::string>& symbols = BpeTokenizer::byte_to_unicode();
    std::string out;
    out.reserve(bytes.size() * 2);
    for (char c : bytes) out += symbols[static_cast<unsigned char>(c)];
    return out;
}

bool byte_level_to_bytes(std::string_view token, std::string& out) {
    out.clear();
    for (std::size_t pos = 0; pos < token.size();) {
        const Utf8Char c = decode_utf8(token, pos);
        if (!c.valid || c.code_point >= kMaxByteCodePoint) return false;
        const int16_t byte = code_point_bytes()[c.code_point];
        if (byte < 0) return false;
        out += static_cast<char>(byte);
        pos += c.length;
    }
    return true;
}

}  // namespace tokenizer_detail
}  // namespace h2tune
