// Reading tokenizer.json components: field access that reports errors as one line naming the file
// and the key path ("tokenizer.json: pre_tokenizer.pretokenizers[0].type 'Foo' is not
// supported"). Private to the tokenizer component.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "h2tune/core/input_file.h"

namespace h2tune::tokenizer_detail {

using json = nlohmann::json;

struct JsonContext {
    const std::string& source;  // the file name in messages

    [[noreturn]] void fail(const std::string& message) const;

    // The member `key` of `object`, or nullptr when absent or null.
    static const json* find(const json& object, const char* key);
    const json& require(const json& object, const char* key, const std::string& path) const;
    bool boolean(const json& object, const char* key, bool fallback, const std::string& path) const;
    std::string string(const json& object, const char* key, const std::string& path) const;
    std::string optional_string(const json& object, const char* key, const std::string& fallback,
                                const std::string& path) const;
    int64_t integer(const json& object, const char* key, int64_t fallback, const std::string& path) const;
    // The "type" member of a component object at `path`.
    std::string type(const json& component, const std::string& path) const;
    [[noreturn]] void unsupported_type(const std::string& path, const std::string& type) const;
    // "<path>.<key> <value> is not supported<detail>".
    [[noreturn]] void unsupported_value(const std::string& path, const char* key, const json& value,
                                        const std::string& detail = "") const;
    // The single code point of a one-character string at path.key.
    uint32_t single_char(const json& object, const char* key, const std::string& path) const;
};


// Real tokenizer.json files nest about 6 levels deep (post_processor.special_tokens.X.ids).
constexpr int kMaxJsonDepth = 64;

inline std::string join_path(const std::string& path, const char* key) { return path + "." + key; }
inline std::string index_path(const std::string& path, std::size_t index) {
    return path + "[" + std::to_string(index) + "]";
}

}  // namespace h2tune::tokenizer_detail
