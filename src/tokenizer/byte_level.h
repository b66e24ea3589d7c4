// GPT-2's reversible byte <-> printable-character map. Private to the tokenizer component.
#pragma once

#include <string>
#include <string_view>

namespace h2tune::tokenizer_detail {

// Raw bytes -> byte-level token string (each byte becomes its mapped character, UTF-8 encoded).
std::string bytes_to_byte_level(std::string_view bytes);

// Byte-level token string -> raw bytes; false (out unspecified) when `token` holds a character
// outside the 256-character alphabet.
bool byte_level_to_bytes(std::string_view token, std::string& out);

}  // namespace h2tune::tokenizer_detail
