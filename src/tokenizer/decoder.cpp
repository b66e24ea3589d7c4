#include "decoder.h"

#include "byte_level.h"
#include "unicode.h"

namespace h2tune::tokenizer_detail {
namespace {

// "<0xNN>" -> the byte; -1 otherwise.
int byte_token_value(const std::string& token) {
    if (token.size() != 6 || token.compare(0, 3, "<0x") != 0 || token[5] != '>') return -1;
    int value = 0;
    for (int i = 3; i < 5; ++i) {
        const char c = token[i];
        int digit;
        if (c >= '0' && c <= '9') {
            digit = c - '0';
        } else if (c >= 'a' && c <= 'f') {
            digit = c - 'a' + 10;
        } else if (c >= 'A' && c <= 'F') {
            digit = c - 'A' + 10;
        } else {
            return -1;
        }
        value = value * 16 + digit;
    }
    return value;
}

std::vector<std::string> split_chars(const std::string& text) {
    std::vector<std::string> chars;
    for (std::size_t pos = 0; pos < text.size();) {
        const Utf8Char c = decode_utf8(text, pos);
        chars.push_back(text.substr(pos, c.length));
        pos += c.length;
    }
    return chars;
}

}  // namespace

Decoder Decoder::none() { return Decoder(); }

Decoder Decoder::from_json(const json& spec, const std::string& path, const JsonContext& context) {
    Decoder decoder;
    const std::string type = context.type(spec, path);
    if (type == "ByteLevel") {
        decoder.kind_ = Kind::ByteLevel;
    } else if (type == "ByteFallback") {
        decoder.kind_ = Kind::ByteFallback;
    } else if (type == "Fuse") {
        decoder.kind_ = Kind::Fuse;
    } else if (type == "Strip") {
        decoder.kind_ = Kind::Strip;
        append_utf8(context.single_char(spec, "content", path), decoder.content_);
        const int64_t start = context.integer(spec, "start", 0, path);
        const int64_t stop = context.integer(spec, "stop", 0, path);
        if (start < 0 || stop < 0) context.fail(path + ": Strip start and stop must not be negative");
        decoder.strip_start_ = static_cast<std::size_t>(start);
        decoder.strip_stop_ = static_cast<std::size_t>(stop);
    } else if (type == "Replace") {
        decoder.kind_ = Kind::Replace;
        decoder.pattern_ = std::make_shared<const SplitPattern>(read_split_pattern(spec, path, context));
        decoder.content_ = context.string(spec, "content", path);
    } else if (type == "Metaspace") {
        decoder.kind_ = Kind::Metaspace;
        append_utf8(context.single_char(spec, "replacement", path), decoder.content_);
        if (const json* scheme = JsonContext::find(spec, "prepend_scheme")) {
            if (*scheme != "first" && *scheme != "always" && *scheme != "never") {
                context.unsupported_value(path, "prepend_scheme", *scheme, " (first, always or never)");
            }
            decoder.metaspace_strip_first_ = *scheme != "never";
        } else {
            decoder.metaspace_strip_first_ = context.boolean(spec, "add_prefix_space", true, path);
        }
    } else if (type == "Sequence") {
        decoder.kind_ = Kind::Sequence;
        const json& steps = context.require(spec, "decoders", path);
        const std::string steps_path = join_path(path, "decoders");
        if (!steps.is_array()) context.fail(steps_path + " must be an array");
        for (std::size_t i = 0; i < steps.size(); ++i) {
            decoder.steps_.push_back(from_json(steps[i], index_path(steps_path, i), context));
        }
    } else {
        context.unsupported_type(path, type);
    }
    return decoder;
}

void Decoder::decode_chain(std::vector<std::string>& tokens) const {
    switch (kind_) {
        case Kind::None:
            return;
        case Kind::ByteLevel: {
            // A token with a character outside the byte alphabet is kept as it is (Hugging Face
            // does the same). Unlike Hugging Face, invalid UTF-8 in the result is not replaced by
            // U+FFFD, so decode stays the exact inverse of encode for every byte string.
            std::string joined, bytes;
            for (const std::string& token : tokens) {
                if (byte_level_to_bytes(token, bytes)) {
                    joined += bytes;
                } else {
                    joined += token;
                }
            }
            tokens.assign(1, std::move(joined));
            return;
        }
        case Kind::ByteFallback: {
            std::vector<std::string> out;
            std::string pending;
            auto flush = [&] {
                if (pending.empty()) return;
                if (is_valid_utf8(pending)) {
                    out.push_back(pending);
                } else {
                    for (std::size_t i = 0; i < pending.size(); ++i) out.emplace_back("\xEF\xBF\xBD");  // U+FFFD
                }
                pending.clear();
            };
            for (std::string& token : tokens) {
                const int byte = byte_token_value(token);
                if (byte >= 0) {
                    pending += static_cast<char>(byte);
                    continue;
                }
                flush();
                out.push_back(std::move(token));
            }
            flush();
            tokens.swap(out);
            return;
        }
        case Kind::Fuse: {
            std::string joined;
            for (const std::string& token : tokens) joined += token;
            tokens.assign(1, std::move(joined));
            return;
        }
        case Kind::Strip:
            for (std::string& token : tokens) {
                const std::vector<std::string> chars = split_chars(token);
                std::size_t start = 0;
                while (start < strip_start_ && start < chars.size() && chars[start] == content_) ++start;
                std::size_t stop = chars.size();
                for (std::size_t i = 0; i < strip_stop_ && stop > start && chars[stop - 1] == content_; ++i) --stop;
                std::string out;
                for (std::size_t i = start; i < stop; ++i) out += chars[i];
                token = std::move(out);
            }
            return;
        case Kind::Replace:
            for (std::string& token : tokens) {
                std::string out;
                for (const Span& span : pattern_->find_matches(token)) {
                    if (span.is_match) {
                        out += content_;
                    } else {
                        out.append(token, span.start, span.end - span.start);
                    }
                }
                token = std::move(out);
            }
            return;
        case Kind::Metaspace:
            // Every replacement character becomes a space, except in the first token, where
            // Hugging Face drops them (the prefix space the pre-tokenizer added).
            for (std::size_t i = 0; i < tokens.size(); ++i) {
                std::string out;
                std::size_t pos = 0;
                const std::string& token = tokens[i];
                while (pos < token.size()) {
                    if (token.compare(pos, content_.size(), content_) == 0) {
                        if (!(i == 0 && metaspace_strip_first_)) out += ' ';
                        pos += content_.size();
                    } else {
                        out += token[pos++];
                    }
                }
                tokens[i] = std::move(out);
            }
            return;
        case Kind::Sequence:
            for (const Decoder& step : steps_) step.decode_chain(tokens);
            return;
    }
}

std::string Decoder::decode(std::vector<std::string> tokens) const {
    if (kind_ == Kind::None) {
        std::string joined;
        for (std::size_t i = 0; i < tokens.size(); ++i) joined += (i ? " " : "") + tokens[i];
        return joined;
    }
    decode_chain(tokens);
    std::string out;
    for (const std::string& token : tokens) out += token;
    return out;
}

}  // namespace h2tune::tokenizer_detail
