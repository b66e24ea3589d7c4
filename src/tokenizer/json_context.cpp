#include "json_context.h"

#include "h2tune/core/error.h"
#include "unicode.h"

namespace h2tune::tokenizer_detail {

void JsonContext::fail(const std::string& message) const { throw ModelError(error_at(source, 0, message)); }

const json* JsonContext::find(const json& object, const char* key) {
    if (!object.is_object()) return nullptr;
    const auto it = object.find(key);
    return it == object.end() || it->is_null() ? nullptr : &*it;
}

const json& JsonContext::require(const json& object, const char* key, const std::string& path) const {
    if (!object.is_object()) fail(path + " must be an object");
    const json* value = find(object, key);
    if (value == nullptr) fail(path + " lacks the field '" + key + "'");
    return *value;
}

bool JsonContext::boolean(const json& object, const char* key, bool fallback, const std::string& path) const {
    const json* value = find(object, key);
    if (value == nullptr) return fallback;
    if (!value->is_boolean()) fail(join_path(path, key) + " must be true or false");
    return value->get<bool>();
}

std::string JsonContext::string(const json& object, const char* key, const std::string& path) const {
    const json& value = require(object, key, path);
    if (!value.is_string()) fail(join_path(path, key) + " must be a string");
    return value.get<std::string>();
}

std::string JsonContext::optional_string(const json& object, const char* key, const std::string& fallback,
                                         const std::string& path) const {
    return find(object, key) == nullptr ? fallback : string(object, key, path);
}

int64_t JsonContext::integer(const json& object, const char* key, int64_t fallback, const std::string& path) const {
    const json* value = find(object, key);
    if (value == nullptr) return fallback;
    if (!value->is_number_integer()) fail(join_path(path, key) + " must be an integer");
    return value->get<int64_t>();
}

std::string JsonContext::type(const json& component, const std::string& path) const {
    if (!component.is_object()) fail(path + " must be an object");
    const json* value = find(component, "type");
    if (value == nullptr || !value->is_string()) fail(path + " lacks a string field 'type'");
    return value->get<std::string>();
}

void JsonContext::unsupported_type(const std::string& path, const std::string& type) const {
    fail(path + ".type '" + type + "' is not supported");
}

void JsonContext::unsupported_value(const std::string& path, const char* key, const json& value,
                                    const std::string& detail) const {
    fail(join_path(path, key) + " " + value.dump() + " is not supported" + detail);
}

uint32_t JsonContext::single_char(const json& object, const char* key, const std::string& path) const {
    const std::string text = string(object, key, path);
    if (text.empty()) fail(join_path(path, key) + " must be one character, not empty");
    const Utf8Char c = decode_utf8(text, 0);
    if (!c.valid || c.length != text.size()) fail(join_path(path, key) + " must be exactly one character");
    return c.code_point;
}

}  // namespace h2tune::tokenizer_detail
