#include "normalizer.h"

#include "unicode.h"
#include "unicode_normalization.h"

namespace h2tune::tokenizer_detail {
namespace {

std::size_t leading_white_space(const std::string& text) {
    std::size_t pos = 0;
    while (pos < text.size()) {
        const Utf8Char c = decode_utf8(text, pos);
        if (!c.valid || !is_white_space(c.code_point)) break;
        pos += c.length;
    }
    return pos;
}

// End of the text without its trailing white space.
std::size_t trailing_white_space(const std::string& text) {
    std::size_t end = 0;
    for (std::size_t pos = 0; pos < text.size();) {
        const Utf8Char c = decode_utf8(text, pos);
        pos += c.length;
        if (!c.valid || !is_white_space(c.code_point)) end = pos;
    }
    return end;
}

}  // namespace

Normalizer Normalizer::from_json(const json& spec, const std::string& path, const JsonContext& context) {
    Normalizer normalizer;
    const std::string type = context.type(spec, path);
    if (type == "NFC") {
        normalizer.kind_ = Kind::Nfc;
    } else if (type == "NFD") {
        normalizer.kind_ = Kind::Nfd;
    } else if (type == "NFKC") {
        normalizer.kind_ = Kind::Nfkc;
    } else if (type == "NFKD") {
        normalizer.kind_ = Kind::Nfkd;
    } else if (type == "Lowercase") {
        normalizer.kind_ = Kind::Lowercase;
    } else if (type == "Strip") {
        normalizer.kind_ = Kind::Strip;
        normalizer.strip_left_ = context.boolean(spec, "strip_left", true, path);
        normalizer.strip_right_ = context.boolean(spec, "strip_right", true, path);
    } else if (type == "Replace") {
        normalizer.kind_ = Kind::Replace;
        normalizer.pattern_ = std::make_shared<const SplitPattern>(read_split_pattern(spec, path, context));
        normalizer.content_ = context.string(spec, "content", path);
    } else if (type == "Prepend") {
        normalizer.kind_ = Kind::Prepend;
        normalizer.content_ = context.string(spec, "prepend", path);
    } else if (type == "Sequence") {
        normalizer.kind_ = Kind::Sequence;
        const json& steps = context.require(spec, "normalizers", path);
        const std::string steps_path = join_path(path, "normalizers");
        if (!steps.is_array()) context.fail(steps_path + " must be an array");
        for (std::size_t i = 0; i < steps.size(); ++i) {
            normalizer.steps_.push_back(from_json(steps[i], index_path(steps_path, i), context));
        }
    } else {
        context.unsupported_type(path, type);
    }
    return normalizer;
}

std::string Normalizer::apply(std::string text) const {
    switch (kind_) {
        case Kind::Nfc:
            return normalize_unicode(text, NormalForm::NFC);
        case Kind::Nfd:
            return normalize_unicode(text, NormalForm::NFD);
        case Kind::Nfkc:
            return normalize_unicode(text, NormalForm::NFKC);
        case Kind::Nfkd:
            return normalize_unicode(text, NormalForm::NFKD);
        case Kind::Lowercase:
            return lowercase(text);
        case Kind::Strip: {
            const std::size_t end = strip_right_ ? trailing_white_space(text) : text.size();
            std::size_t start = strip_left_ ? leading_white_space(text) : 0;
            if (start > end) start = end;
            return text.substr(start, end - start);
        }
        case Kind::Replace: {
            std::string out;
            out.reserve(text.size());
            for (const Span& span : pattern_->find_matches(text)) {
                if (span.is_match) {
                    out += content_;
                } else {
                    out.append(text, span.start, span.end - span.start);
                }
            }
            return out;
        }
        case Kind::Prepend:
            return text.empty() ? text : content_ + text;
        case Kind::Sequence:
            for (const Normalizer& step : steps_) text = step.apply(std::move(text));
            return text;
    }
    return text;
}

}  // namespace h2tune::tokenizer_detail
