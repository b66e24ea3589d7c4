#include "pre_tokenization.h"

#include "pre_tokenizer.h"
#include "unicode.h"

namespace h2tune::tokenizer_detail {
namespace {

bool is_numeric(uint32_t c) { return classify(c) == CharClass::Number; }
bool is_space(uint32_t c) { return is_white_space(c); }
bool is_punctuation(uint32_t c) {
    if (c < 128) return (c >= '!' && c <= '/') || (c >= ':' && c <= '@') || (c >= '[' && c <= '`') || (c >= '{' && c <= '~');
    switch (general_category(c)) {
        case GeneralCategory::Pc:
        case GeneralCategory::Pd:
        case GeneralCategory::Ps:
        case GeneralCategory::Pe:
        case GeneralCategory::Pi:
        case GeneralCategory::Pf:
        case GeneralCategory::Po:
            return true;
        default:
            return false;
    }
}

SplitBehavior read_behavior(const json& spec, const char* key, const std::string& path, const JsonContext& context,
                            SplitBehavior fallback) {
    const json* value = JsonContext::find(spec, key);
    if (value == nullptr) return fallback;
    static const std::pair<const char*, SplitBehavior> kNames[] = {
        {"Removed", SplitBehavior::Removed},
        {"Isolated", SplitBehavior::Isolated},
        {"MergedWithPrevious", SplitBehavior::MergedWithPrevious},
        {"MergedWithNext", SplitBehavior::MergedWithNext},
        {"Contiguous", SplitBehavior::Contiguous}};
    if (value->is_string()) {
        for (const auto& [name, behavior] : kNames) {
            if (*value == name) return behavior;
        }
    }
    context.unsupported_value(path, key, *value,
                              " (Removed, Isolated, MergedWithPrevious, MergedWithNext or Contiguous)");
}

}  // namespace

PreTokenization PreTokenization::from_json(const json& spec, const std::string& path, const JsonContext& context) {
    PreTokenization result;
    result.read_step(spec, path, context, true);
    return result;
}

void PreTokenization::read_step(const json& spec, const std::string& path, const JsonContext& context, bool last) {
    const std::string type = context.type(spec, path);
    if (byte_level_) context.fail(path + ": a step after ByteLevel is not supported (ByteLevel must come last)");
    Step step;
    if (type == "Sequence") {
        const json& list = context.require(spec, "pretokenizers", path);
        const std::string list_path = join_path(path, "pretokenizers");
        if (!list.is_array()) context.fail(list_path + " must be an array");
        for (std::size_t i = 0; i < list.size(); ++i) {
            read_step(list[i], index_path(list_path, i), context, last && i + 1 == list.size());
        }
        return;
    }
    if (type == "Split") {
        step.pattern = std::make_shared<const SplitPattern>(read_split_pattern(spec, path, context));
        step.behavior = read_behavior(spec, "behavior", path, context, SplitBehavior::Isolated);
        step.invert = context.boolean(spec, "invert", false, path);
    } else if (type == "ByteLevel") {
        if (!last) context.fail(path + ": ByteLevel followed by further steps is not supported (it must come last)");
        step.kind = Step::Kind::ByteLevel;
        step.add_prefix_space = context.boolean(spec, "add_prefix_space", true, path);
        step.use_regex = context.boolean(spec, "use_regex", true, path);
        step.pattern = std::make_shared<const SplitPattern>(SplitPattern::hand_written(BpeTokenizer::PreTokenizer::Gpt2));
        byte_level_ = true;
    } else if (type == "Digits") {
        step.pattern = std::make_shared<const SplitPattern>(SplitPattern::predicate(is_numeric));
        step.behavior = context.boolean(spec, "individual_digits", false, path) ? SplitBehavior::Isolated
                                                                                : SplitBehavior::Contiguous;
    } else if (type == "Metaspace") {
        step.kind = Step::Kind::Metaspace;
        const uint32_t replacement = context.single_char(spec, "replacement", path);
        append_utf8(replacement, step.replacement);
        step.split = context.boolean(spec, "split", true, path);
        if (const json* scheme = JsonContext::find(spec, "prepend_scheme")) {
            if (*scheme == "first") {
                step.prepend_scheme = PrependScheme::First;
            } else if (*scheme == "always") {
                step.prepend_scheme = PrependScheme::Always;
            } else if (*scheme == "never") {
                step.prepend_scheme = PrependScheme::Never;
            } else {
                context.unsupported_value(path, "prepend_scheme", *scheme, " (first, always or never)");
            }
        } else {
            // Files written before prepend_scheme existed say add_prefix_space.
            step.prepend_scheme =
                context.boolean(spec, "add_prefix_space", true, path) ? PrependScheme::Always : PrependScheme::Never;
        }
    } else if (type == "Whitespace") {
        step.pattern = std::make_shared<const SplitPattern>(SplitPattern::word_runs());
        step.behavior = SplitBehavior::Removed;
        step.invert = true;
    } else if (type == "WhitespaceSplit") {
        step.pattern = std::make_shared<const SplitPattern>(SplitPattern::predicate(is_space));
        step.behavior = SplitBehavior::Removed;
    } else if (type == "Punctuation") {
        step.pattern = std::make_shared<const SplitPattern>(SplitPattern::predicate(is_punctuation));
        step.behavior = read_behavior(spec, "behavior", path, context, SplitBehavior::Isolated);
    } else if (type == "BertPreTokenizer") {
        Step whitespace;
        whitespace.pattern = std::make_shared<const SplitPattern>(SplitPattern::predicate(is_space));
        whitespace.behavior = SplitBehavior::Removed;
        steps_.push_back(whitespace);
        step.pattern = std::make_shared<const SplitPattern>(SplitPattern::predicate(is_punctuation));
        step.behavior = SplitBehavior::Isolated;
    } else if (type == "CharDelimiterSplit") {
        std::string delimiter;
        append_utf8(context.single_char(spec, "delimiter", path), delimiter);
        step.pattern = std::make_shared<const SplitPattern>(SplitPattern::literal(delimiter));
        step.behavior = SplitBehavior::Removed;
    } else {
        context.unsupported_type(path, type);
    }
    steps_.push_back(std::move(step));
}

void PreTokenization::split_pieces(std::vector<Piece>& pieces, const SplitPattern& pattern, SplitBehavior behavior,
                                   bool invert) {
    std::vector<Piece> out;
    out.reserve(pieces.size() * 2);
    for (Piece& piece : pieces) {
        const auto ranges = split_spans(pattern.find_matches(piece.text), behavior, invert);
        if (ranges.size() == 1 && ranges[0].first == 0 && ranges[0].second == piece.text.size()) {
            out.push_back(std::move(piece));
            continue;
        }
        for (const auto& [start, end] : ranges) {
            out.push_back(Piece{piece.text.substr(start, end - start), piece.at_input_start && start == 0});
        }
    }
    pieces.swap(out);
}

void PreTokenization::apply_step(const Step& step, std::vector<Piece>& pieces) const {
    switch (step.kind) {
        case Step::Kind::Split:
            split_pieces(pieces, *step.pattern, step.behavior, step.invert);
            return;
        case Step::Kind::ByteLevel:
            if (step.add_prefix_space) {
                for (Piece& piece : pieces) {
                    if (piece.text.empty() || piece.text[0] != ' ') piece.text.insert(0, 1, ' ');
                }
            }
            if (step.use_regex) split_pieces(pieces, *step.pattern, SplitBehavior::Isolated, false);
            return;
        case Step::Kind::Metaspace: {
            for (Piece& piece : pieces) {
                std::string replaced;
                replaced.reserve(piece.text.size() + step.replacement.size());
                for (char c : piece.text) {
                    if (c == ' ') {
                        replaced += step.replacement;
                    } else {
                        replaced += c;
                    }
                }
                const bool starts_with_replacement = replaced.compare(0, step.replacement.size(), step.replacement) == 0;
                const bool prepend = !starts_with_replacement &&
                                     (step.prepend_scheme == PrependScheme::Always ||
                                      (step.prepend_scheme == PrependScheme::First && piece.at_input_start));
                piece.text = prepend ? step.replacement + replaced : std::move(replaced);
            }
            if (step.split) {
                const SplitPattern separator = SplitPattern::literal(step.replacement);
                split_pieces(pieces, separator, SplitBehavior::MergedWithNext, false);
            }
            return;
        }
    }
}

std::string pre_tokenizer_json(BpeTokenizer::PreTokenizer kind) {
    auto byte_level = [](bool use_regex) {
        return json{{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", use_regex}};
    };
    auto split = [](const char* pattern) {
        return json{{"type", "Split"}, {"pattern", {{"Regex", pattern}}}, {"behavior", "Isolated"}, {"invert", false}};
    };
    auto sequence = [](json first, json second) {
        return json{{"type", "Sequence"}, {"pretokenizers", json::array({std::move(first), std::move(second)})}};
    };
    switch (kind) {
        case BpeTokenizer::PreTokenizer::Llama3:
            return sequence(split(kLlama3Pattern), byte_level(false)).dump();
        case BpeTokenizer::PreTokenizer::Qwen2:
            return sequence(split(kQwen2Pattern), byte_level(false)).dump();
        case BpeTokenizer::PreTokenizer::Gpt2IsolatedDigits:
            return sequence(json{{"type", "Digits"}, {"individual_digits", true}}, byte_level(true)).dump();
        case BpeTokenizer::PreTokenizer::Gpt2:
            break;
    }
    return byte_level(true).dump();
}

void PreTokenization::apply(std::vector<Piece>& pieces) const {
    for (const Step& step : steps_) apply_step(step, pieces);
}

}  // namespace h2tune::tokenizer_detail

namespace h2tune::tokenizer_detail {

void PreTokenization::emit_pieces(std::vector<Piece>& pieces, const std::function<void(std::string_view)>& emit) const {
    if (steps_.empty() || steps_.back().kind == Step::Kind::Metaspace) {
        apply(pieces);
        for (const Piece& piece : pieces) {
            if (!piece.text.empty()) emit(piece.text);
        }
        return;
    }
    for (std::size_t i = 0; i + 1 < steps_.size(); ++i) apply_step(steps_[i], pieces);
    const Step& last = steps_.back();
    const bool byte_level = last.kind == Step::Kind::ByteLevel;
    const SplitBehavior behavior = byte_level ? SplitBehavior::Isolated : last.behavior;
    const bool invert = byte_level ? false : last.invert;
    BpeTokenizer::PreTokenizer kind;
    const bool direct = last.pattern->is_hand_written(kind) && behavior == SplitBehavior::Isolated && !invert;
    for (Piece& piece : pieces) {
        if (byte_level && last.add_prefix_space && (piece.text.empty() || piece.text[0] != ' ')) {
            piece.text.insert(0, 1, ' ');
        }
        const std::string_view text = piece.text;
        if (text.empty()) continue;
        if (byte_level && !last.use_regex) {
            emit(text);
        } else if (direct) {
            for_each_piece(text, kind, emit);
        } else {
            for (const auto& [start, end] : split_spans(last.pattern->find_matches(text), behavior, invert)) {
                emit(text.substr(start, end - start));
            }
        }
    }
}

}  // namespace h2tune::tokenizer_detail
