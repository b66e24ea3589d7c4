// Parser -> syntax tree -> instruction list -> backtracking matcher with an explicit stack (no
// recursion per character, so long inputs cannot overflow the call stack).
#include "regex.h"

#include <algorithm>
#include <deque>
#include <limits>

#include "unicode.h"

namespace h2tune::tokenizer_detail {
namespace {

constexpr uint32_t kInvalidChar = 0xFFFFFFFFu;  // an invalid UTF-8 byte of the subject
constexpr uint32_t kUnbounded = std::numeric_limits<uint32_t>::max();
constexpr std::size_t kMaxProgramSize = 200000;

// Bit i stands for GeneralCategory i; bit 30 for an invalid byte, which no positive item holds.
constexpr uint32_t kInvalidBit = 1u << 30;
constexpr uint32_t bit(GeneralCategory category) { return 1u << static_cast<unsigned>(category); }
constexpr uint32_t kAllCategories = (1u << 30) - 1;

uint32_t category_bit(uint32_t c) { return c == kInvalidChar ? kInvalidBit : bit(general_category(c)); }

constexpr uint32_t kLetters = bit(GeneralCategory::Lu) | bit(GeneralCategory::Ll) | bit(GeneralCategory::Lt) |
                              bit(GeneralCategory::Lm) | bit(GeneralCategory::Lo);
constexpr uint32_t kMarks = bit(GeneralCategory::Mn) | bit(GeneralCategory::Mc) | bit(GeneralCategory::Me);
constexpr uint32_t kNumbers = bit(GeneralCategory::Nd) | bit(GeneralCategory::Nl) | bit(GeneralCategory::No);
constexpr uint32_t kPunctuation = bit(GeneralCategory::Pc) | bit(GeneralCategory::Pd) | bit(GeneralCategory::Ps) |
                                  bit(GeneralCategory::Pe) | bit(GeneralCategory::Pi) | bit(GeneralCategory::Pf) |
                                  bit(GeneralCategory::Po);
constexpr uint32_t kSymbols = bit(GeneralCategory::Sm) | bit(GeneralCategory::Sc) | bit(GeneralCategory::Sk) |
                              bit(GeneralCategory::So);
constexpr uint32_t kSeparators = bit(GeneralCategory::Zs) | bit(GeneralCategory::Zl) | bit(GeneralCategory::Zp);
constexpr uint32_t kOthers = bit(GeneralCategory::Cc) | bit(GeneralCategory::Cf) | bit(GeneralCategory::Cs) |
                             bit(GeneralCategory::Co) | bit(GeneralCategory::Cn);
// \w in Oniguruma's Unicode mode, as measured against Hugging Face's Oniguruma on every code
// point: letters, marks, decimal and letter numbers, connector punctuation, the circled and
// squared Latin letters (Other_Alphabetic symbols) and Latin-1's superscripts and fractions.
constexpr uint32_t kWord = kLetters | kMarks | bit(GeneralCategory::Nd) | bit(GeneralCategory::Nl) |
                           bit(GeneralCategory::Pc);

bool is_word_char(uint32_t c) {
    if ((category_bit(c) & kWord) != 0) return true;
    return c == 0xB2 || c == 0xB3 || c == 0xB9 || (c >= 0xBC && c <= 0xBE) || is_alphabetic_symbol(c);
}

struct CharSet {
    struct CategoryItem {
        uint32_t mask;
        bool negated;
    };
    std::vector<std::pair<uint32_t, uint32_t>> ranges;
    std::vector<CategoryItem> categories;
    bool space = false, not_space = false;
    bool word = false, not_word = false;
    bool negated = false;
    bool icase = false;

    bool contains_raw(uint32_t c) const {
        for (const auto& [first, last] : ranges) {
            if (c >= first && c <= last) return true;
        }
        const uint32_t cat = category_bit(c);
        for (const CategoryItem& item : categories) {
            if (((cat & item.mask) != 0) != item.negated) return true;
        }
        const bool white = c != kInvalidChar && is_white_space(c);
        if ((space && white) || (not_space && !white)) return true;
        if (word || not_word) {
            const bool is_word = c != kInvalidChar && is_word_char(c);
            if ((word && is_word) || (not_word && !is_word)) return true;
        }
        return false;
    }

    bool matches(uint32_t c) const {
        bool in = contains_raw(c);
        if (!in && icase && c != kInvalidChar) {
            const uint32_t folded = simple_case_fold(c);
            in = (folded != c && contains_raw(folded)) || (c >= 'a' && c <= 'z' && contains_raw(c - 32));
        }
        return in != negated;
    }
};

enum class Op : uint8_t {
    Char, Set, Any, Split, Jmp, Match, Look, Bol, Eol, Begin, End, EndBeforeNewline, WordBoundary,
    NotWordBoundary, RepeatOne
};
enum class RepeatMode : uint8_t { Greedy, Lazy, Possessive };

struct Inst {
    Op op = Op::Match;
    Op item = Op::Char;  // RepeatOne: the single-character test it repeats
    bool icase = false;
    bool negated = false;  // Look
    RepeatMode mode = RepeatMode::Greedy;
    uint32_t cp = 0;
    int32_t set = -1;
    int32_t x = 0, y = 0;  // Split: preferred, alternative; Jmp: x; Look: body x, continuation y
    uint32_t min = 0, max = 0;
};

struct Node {
    enum Kind { Empty, Char, Set, Any, Concat, Alternate, Repeat, Look, Assert } kind = Empty;
    uint32_t cp = 0;
    bool icase = false;
    int32_t set = -1;
    std::vector<std::unique_ptr<Node>> children;
    uint32_t min = 0, max = 0;
    RepeatMode mode = RepeatMode::Greedy;
    bool negated = false;
    Op assertion = Op::Bol;
};
using NodePtr = std::unique_ptr<Node>;

NodePtr make_node(Node::Kind kind) {
    auto node = std::make_unique<Node>();
    node->kind = kind;
    return node;
}

bool is_single_char(const Node& node) {
    return node.kind == Node::Char || node.kind == Node::Set || node.kind == Node::Any;
}

bool nullable(const Node& node) {
    switch (node.kind) {
        case Node::Char:
        case Node::Set:
        case Node::Any:
            return false;
        case Node::Concat:
            return std::all_of(node.children.begin(), node.children.end(), [](const NodePtr& c) { return nullable(*c); });
        case Node::Alternate:
            return std::any_of(node.children.begin(), node.children.end(), [](const NodePtr& c) { return nullable(*c); });
        case Node::Repeat:
            return node.min == 0 || nullable(*node.children[0]);
        default:
            return true;
    }
}

std::string describe(uint32_t cp) {
    std::string out;
    append_utf8(cp, out);
    return "'" + out + "'";
}

bool valid_group_name_char(uint32_t c) {
    return c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

int hex_value(uint32_t c) {
    if (c >= '0' && c <= '9') return static_cast<int>(c - '0');
    if (c >= 'a' && c <= 'f') return static_cast<int>(c - 'a' + 10);
    if (c >= 'A' && c <= 'F') return static_cast<int>(c - 'A' + 10);
    return -1;
}

// General-category names as Oniguruma accepts them (case, spaces, '_' and '-' ignored).
bool category_mask(std::string name, uint32_t& mask) {
    std::string key;
    for (char c : name) {
        if (c == ' ' || c == '_' || c == '-') continue;
        key += static_cast<char>(c >= 'A' && c <= 'Z' ? c + 32 : c);
    }
    using G = GeneralCategory;
    static const std::pair<const char*, uint32_t> kNames[] = {
        {"l", kLetters}, {"letter", kLetters}, {"lu", bit(G::Lu)}, {"uppercaseletter", bit(G::Lu)},
        {"ll", bit(G::Ll)}, {"lowercaseletter", bit(G::Ll)}, {"lt", bit(G::Lt)}, {"titlecaseletter", bit(G::Lt)},
        {"lm", bit(G::Lm)}, {"modifierletter", bit(G::Lm)}, {"lo", bit(G::Lo)}, {"otherletter", bit(G::Lo)},
        {"lc", bit(G::Lu) | bit(G::Ll) | bit(G::Lt)}, {"l&", bit(G::Lu) | bit(G::Ll) | bit(G::Lt)},
        {"casedletter", bit(G::Lu) | bit(G::Ll) | bit(G::Lt)}, {"m", kMarks}, {"mark", kMarks},
        {"combiningmark", kMarks}, {"mn", bit(G::Mn)}, {"nonspacingmark", bit(G::Mn)}, {"mc", bit(G::Mc)},
        {"spacingmark", bit(G::Mc)}, {"me", bit(G::Me)}, {"enclosingmark", bit(G::Me)}, {"n", kNumbers},
        {"number", kNumbers}, {"nd", bit(G::Nd)}, {"decimalnumber", bit(G::Nd)}, {"nl", bit(G::Nl)},
        {"letternumber", bit(G::Nl)}, {"no", bit(G::No)}, {"othernumber", bit(G::No)}, {"p", kPunctuation},
        {"punctuation", kPunctuation}, {"pc", bit(G::Pc)}, {"connectorpunctuation", bit(G::Pc)},
        {"pd", bit(G::Pd)}, {"dashpunctuation", bit(G::Pd)}, {"ps", bit(G::Ps)}, {"openpunctuation", bit(G::Ps)},
        {"pe", bit(G::Pe)}, {"closepunctuation", bit(G::Pe)}, {"pi", bit(G::Pi)},
        {"initialpunctuation", bit(G::Pi)}, {"pf", bit(G::Pf)}, {"finalpunctuation", bit(G::Pf)},
        {"po", bit(G::Po)}, {"otherpunctuation", bit(G::Po)}, {"s", kSymbols}, {"symbol", kSymbols},
        {"sm", bit(G::Sm)}, {"mathsymbol", bit(G::Sm)}, {"sc", bit(G::Sc)}, {"currencysymbol", bit(G::Sc)},
        {"sk", bit(G::Sk)}, {"modifiersymbol", bit(G::Sk)}, {"so", bit(G::So)}, {"othersymbol", bit(G::So)},
        {"z", kSeparators}, {"separator", kSeparators}, {"zs", bit(G::Zs)}, {"spaceseparator", bit(G::Zs)},
        {"zl", bit(G::Zl)}, {"lineseparator", bit(G::Zl)}, {"zp", bit(G::Zp)},
        {"paragraphseparator", bit(G::Zp)}, {"c", kOthers}, {"other", kOthers}, {"cc", bit(G::Cc)},
        {"control", bit(G::Cc)}, {"cf", bit(G::Cf)}, {"format", bit(G::Cf)}, {"cs", bit(G::Cs)},
        {"surrogate", bit(G::Cs)}, {"co", bit(G::Co)}, {"privateuse", bit(G::Co)}, {"cn", bit(G::Cn)},
        {"unassigned", bit(G::Cn)}, {"any", kAllCategories}};
    for (const auto& [known, value] : kNames) {
        if (key == known) {
            mask = value;
            return true;
        }
    }
    return false;
}

class Parser {
public:
    Parser(std::string_view pattern, std::vector<CharSet>& sets) : sets_(sets) {
        for (std::size_t pos = 0; pos < pattern.size();) {
            const Utf8Char c = decode_utf8(pattern, pos);
            if (!c.valid) throw RegexError("the pattern is not valid UTF-8");
            chars_.push_back(c.code_point);
            pos += c.length;
        }
    }

    NodePtr parse() {
        bool icase = false;
        NodePtr root = parse_alternation(icase);
        if (pos_ < chars_.size()) throw RegexError("unmatched ')' at position " + std::to_string(pos_));
        return root;
    }

private:
    bool at_end() const { return pos_ >= chars_.size(); }
    uint32_t peek(std::size_t ahead = 0) const { return pos_ + ahead < chars_.size() ? chars_[pos_ + ahead] : 0; }
    uint32_t next() {
        if (at_end()) throw RegexError("the pattern ends too early");
        return chars_[pos_++];
    }
    bool accept(uint32_t c) {
        if (!at_end() && chars_[pos_] == c) {
            ++pos_;
            return true;
        }
        return false;
    }
    [[noreturn]] void unsupported(const std::string& what) const {
        throw RegexError(what + " (at position " + std::to_string(pos_) + ") is not supported");
    }

    // `icase` is the group's flag state; (?i) inside the group changes it until the group ends.
    NodePtr parse_alternation(bool& icase) {
        std::vector<NodePtr> branches;
        branches.push_back(parse_sequence(icase));
        while (accept('|')) branches.push_back(parse_sequence(icase));
        if (branches.size() == 1) return std::move(branches[0]);
        NodePtr node = make_node(Node::Alternate);
        node->children = std::move(branches);
        return node;
    }

    NodePtr parse_sequence(bool& icase) {
        NodePtr node = make_node(Node::Concat);
        while (!at_end() && peek() != '|' && peek() != ')') {
            NodePtr atom = parse_atom(icase);
            if (!atom) continue;  // an inline flag group
            atom = parse_quantifiers(std::move(atom));
            node->children.push_back(std::move(atom));
        }
        if (node->children.size() == 1) return std::move(node->children[0]);
        if (node->children.empty()) return make_node(Node::Empty);
        return node;
    }

    // {m}, {m,}, {,n}, {m,n} at pos_; false (nothing consumed) if the brace is a literal.
    bool parse_braces(uint32_t& min, uint32_t& max) {
        std::size_t i = pos_ + 1;
        auto number = [&](uint32_t& value) {
            const std::size_t start = i;
            uint64_t v = 0;
            while (i < chars_.size() && chars_[i] >= '0' && chars_[i] <= '9') {
                v = v * 10 + (chars_[i] - '0');
                if (v > 100000) throw RegexError("a repetition count above 100000 is not supported");
                ++i;
            }
            value = static_cast<uint32_t>(v);
            return i > start;
        };
        uint32_t low = 0, high = 0;
        const bool has_low = number(low);
        if (i < chars_.size() && chars_[i] == '}') {
            if (!has_low) return false;
            min = max = low;
        } else if (i < chars_.size() && chars_[i] == ',') {
            ++i;
            const bool has_high = number(high);
            if (i >= chars_.size() || chars_[i] != '}' || (!has_low && !has_high)) return false;
            min = has_low ? low : 0;
            max = has_high ? high : kUnbounded;
            if (max < min) throw RegexError("repetition {" + std::to_string(min) + "," + std::to_string(max) + "} has max < min");
        } else {
            return false;
        }
        pos_ = i + 1;
        return true;
    }

    NodePtr parse_quantifiers(NodePtr atom) {
        for (;;) {
            uint32_t min = 0, max = 0;
            const uint32_t c = peek();
            if (c == '?') {
                ++pos_;
                min = 0, max = 1;
            } else if (c == '*') {
                ++pos_;
                min = 0, max = kUnbounded;
            } else if (c == '+') {
                ++pos_;
                min = 1, max = kUnbounded;
            } else if (c == '{' && parse_braces(min, max)) {
            } else {
                return atom;
            }
            if (atom->kind == Node::Look || atom->kind == Node::Assert || atom->kind == Node::Empty) {
                unsupported("a quantifier on an assertion or empty group");
            }
            NodePtr repeat = make_node(Node::Repeat);
            repeat->min = min;
            repeat->max = max;
            if (accept('?')) {
                repeat->mode = RepeatMode::Lazy;
            } else if (c != '{' && accept('+')) {
                repeat->mode = RepeatMode::Possessive;
            }
            repeat->children.push_back(std::move(atom));
            atom = std::move(repeat);
        }
    }

    NodePtr literal(uint32_t cp, bool icase) {
        NodePtr node = make_node(Node::Char);
        node->cp = cp;
        node->icase = icase;
        return node;
    }

    NodePtr set_node(CharSet set, bool icase) {
        set.icase = icase;
        sets_.push_back(std::move(set));
        NodePtr node = make_node(Node::Set);
        node->set = static_cast<int32_t>(sets_.size() - 1);
        return node;
    }

    NodePtr assertion(Op op) {
        NodePtr node = make_node(Node::Assert);
        node->assertion = op;
        return node;
    }

    NodePtr parse_atom(bool& icase) {
        const uint32_t c = next();
        switch (c) {
            case '(':
                return parse_group(icase);
            case '[': {
                CharSet set = parse_class();
                return set_node(std::move(set), icase);
            }
            case '.':
                return make_node(Node::Any);
            case '^':
                return assertion(Op::Bol);
            case '$':
                return assertion(Op::Eol);
            case '\\':
                return parse_escape(icase);
            case '*':
            case '+':
            case '?':
                throw RegexError("quantifier '" + std::string(1, static_cast<char>(c)) + "' at position " +
                                 std::to_string(pos_ - 1) + " has nothing to repeat");
            default:
                return literal(c, icase);
        }
    }

    NodePtr parse_group(bool& icase) {
        bool group_icase = icase;
        NodePtr body;
        if (accept('?')) {
            const uint32_t kind = peek();
            if (kind == ':') {
                ++pos_;
            } else if (kind == '=' || kind == '!') {
                ++pos_;
                NodePtr look = make_node(Node::Look);
                look->negated = kind == '!';
                look->children.push_back(parse_alternation(group_icase));
                if (!accept(')')) throw RegexError("unterminated lookahead group");
                return look;
            } else if (kind == '<' && (peek(1) == '=' || peek(1) == '!')) {
                unsupported("lookbehind (?<" + std::string(1, static_cast<char>(peek(1))) + "...)");
            } else if (kind == '<' || (kind == 'P' && peek(1) == '<')) {
                pos_ += kind == 'P' ? 2 : 1;
                while (!at_end() && valid_group_name_char(peek())) ++pos_;
                if (!accept('>')) throw RegexError("malformed group name");
            } else if (kind == '>') {
                unsupported("atomic group (?>...)");
            } else if (kind == '#') {
                while (!at_end() && peek() != ')') ++pos_;
                if (!accept(')')) throw RegexError("unterminated comment group");
                return nullptr;
            } else {
                // Flags: (?i) (?-i) (?i:...) (?-i:...).
                bool on = true;
                bool flag_value = icase;
                for (;;) {
                    const uint32_t f = next();
                    if (f == '-') {
                        on = false;
                    } else if (f == 'i') {
                        flag_value = on;
                    } else if (f == ':' || f == ')') {
                        if (f == ')') {
                            icase = flag_value;  // to the end of the enclosing group
                            return nullptr;
                        }
                        group_icase = flag_value;
                        break;
                    } else {
                        pos_ -= 1;
                        unsupported("group flag " + describe(f));
                    }
                }
            }
        }
        body = parse_alternation(group_icase);
        if (!accept(')')) throw RegexError("unterminated group");
        return body;
    }

    uint32_t parse_hex(std::size_t digits) {
        uint32_t value = 0;
        for (std::size_t i = 0; i < digits; ++i) {
            const int h = hex_value(next());
            if (h < 0) throw RegexError("malformed hexadecimal escape");
            value = value * 16 + static_cast<uint32_t>(h);
        }
        return value;
    }

    // \x and \u after the letter was read.
    uint32_t parse_code_point_escape(uint32_t letter) {
        if (letter == 'u') return parse_hex(4);
        if (accept('{')) {
            uint32_t value = 0;
            std::size_t count = 0;
            while (!accept('}')) {
                const int h = hex_value(next());
                if (h < 0 || ++count > 8) throw RegexError("malformed \\x{...} escape");
                value = value * 16 + static_cast<uint32_t>(h);
            }
            if (count == 0 || value > 0x10FFFF) throw RegexError("malformed \\x{...} escape");
            return value;
        }
        uint32_t value = 0;
        for (std::size_t i = 0; i < 2 && hex_value(peek()) >= 0; ++i) value = value * 16 + hex_value(next());
        return value;
    }

    // A class escape (\s \d \w \h \p{..} and negations) added to `set`; false if `letter` is none.
    bool add_class_escape(uint32_t letter, CharSet& set) {
        switch (letter) {
            case 's':
                set.space = true;
                return true;
            case 'S':
                set.not_space = true;
                return true;
            case 'd':
                set.categories.push_back({bit(GeneralCategory::Nd), false});
                return true;
            case 'D':
                set.categories.push_back({bit(GeneralCategory::Nd), true});
                return true;
            case 'w':
                set.word = true;
                return true;
            case 'W':
                set.not_word = true;
                return true;
            case 'h':
            case 'H': {
                // Oniguruma's \h is a hexadecimal digit.
                if (letter == 'h') {
                    set.ranges.insert(set.ranges.end(), {{'0', '9'}, {'a', 'f'}, {'A', 'F'}});
                } else {
                    // [^0-9a-fA-F] as ranges.
                    set.ranges.insert(set.ranges.end(), {{0, '0' - 1}, {'9' + 1, 'A' - 1}, {'F' + 1, 'a' - 1},
                                                         {'f' + 1, 0x10FFFF}});
                }
                return true;
            }
            case 'p':
            case 'P': {
                bool negated = letter == 'P';
                if (!accept('{')) unsupported("\\p without braces");
                if (accept('^')) negated = !negated;
                std::string name;
                while (!accept('}')) {
                    const uint32_t c = next();
                    if (c > 0x7F) throw RegexError("malformed Unicode property name");
                    name += static_cast<char>(c);
                }
                uint32_t mask = 0;
                if (!category_mask(name, mask)) unsupported("Unicode property \\p{" + name + "}");
                set.categories.push_back({mask, negated});
                return true;
            }
            default:
                return false;
        }
    }

    // A single-character escape shared by classes and the top level; false if `letter` is none.
    bool simple_escape(uint32_t letter, uint32_t& cp) {
        switch (letter) {
            case 't': cp = '\t'; return true;
            case 'n': cp = '\n'; return true;
            case 'r': cp = '\r'; return true;
            case 'f': cp = '\f'; return true;
            case 'v': cp = '\v'; return true;
            case 'a': cp = 7; return true;
            case 'e': cp = 27; return true;
            case '0': {
                cp = 0;
                for (int i = 0; i < 2 && peek() >= '0' && peek() <= '7'; ++i) cp = cp * 8 + (next() - '0');
                return true;
            }
            case 'x':
            case 'u':
                cp = parse_code_point_escape(letter);
                return true;
            default:
                break;
        }
        const bool alnum = (letter >= 'a' && letter <= 'z') || (letter >= 'A' && letter <= 'Z') ||
                           (letter >= '0' && letter <= '9');
        if (alnum) return false;
        cp = letter;  // escaped punctuation, space or non-ASCII character: itself
        return true;
    }

    NodePtr parse_escape(bool icase) {
        const uint32_t letter = next();
        CharSet set;
        if (add_class_escape(letter, set)) return set_node(std::move(set), icase);
        switch (letter) {
            case 'A': return assertion(Op::Begin);
            case 'z': return assertion(Op::End);
            case 'Z': return assertion(Op::EndBeforeNewline);
            case 'b': return assertion(Op::WordBoundary);
            case 'B': return assertion(Op::NotWordBoundary);
            default: break;
        }
        uint32_t cp = 0;
        if (simple_escape(letter, cp)) return literal(cp, icase);
        pos_ -= 1;
        if (letter >= '1' && letter <= '9') unsupported("backreference \\" + std::string(1, static_cast<char>(letter)));
        unsupported("escape \\" + std::string(1, static_cast<char>(letter)));
    }

    // After '['.
    CharSet parse_class() {
        CharSet set;
        if (accept('^')) set.negated = true;
        bool first = true;
        for (;;) {
            if (at_end()) throw RegexError("unterminated character class");
            uint32_t c = next();
            if (c == ']' && !first) break;
            first = false;
            if (c == '[') unsupported("a nested character class or POSIX bracket");
            if (c == '&' && peek() == '&') unsupported("class intersection &&");
            uint32_t low = c;
            if (c == '\\') {
                const uint32_t letter = next();
                if (add_class_escape(letter, set)) continue;
                if (letter == 'b') {
                    low = 8;
                } else if (!simple_escape(letter, low)) {
                    pos_ -= 1;
                    unsupported("escape \\" + std::string(1, static_cast<char>(letter)) + " in a class");
                }
            }
            if (peek() == '-' && peek(1) != ']' && pos_ + 1 < chars_.size()) {
                ++pos_;
                uint32_t high = next();
                if (high == '\\') {
                    const uint32_t letter = next();
                    if (!simple_escape(letter, high)) unsupported("a class escape as a range end");
                } else if (high == '[') {
                    unsupported("a nested character class");
                }
                if (high < low) throw RegexError("class range " + describe(low) + "-" + describe(high) + " is reversed");
                set.ranges.emplace_back(low, high);
            } else {
                set.ranges.emplace_back(low, low);
            }
        }
        return set;
    }

    std::vector<uint32_t> chars_;
    std::size_t pos_ = 0;
    std::vector<CharSet>& sets_;
};

}  // namespace

// ---------------------------------------------------------------- compiled program

struct Regex::Program {
    std::vector<Inst> code;
    std::vector<CharSet> sets;

    void emit(const Node& node) {
        if (code.size() > kMaxProgramSize) throw RegexError("the pattern is too large once repetitions are expanded");
        switch (node.kind) {
            case Node::Empty:
                return;
            case Node::Char:
            case Node::Set:
            case Node::Any: {
                Inst inst;
                inst.op = node.kind == Node::Char ? Op::Char : node.kind == Node::Set ? Op::Set : Op::Any;
                inst.cp = node.cp;
                inst.icase = node.icase;
                inst.set = node.set;
                code.push_back(inst);
                return;
            }
            case Node::Concat:
                for (const NodePtr& child : node.children) emit(*child);
                return;
            case Node::Alternate: {
                std::vector<std::size_t> jumps;
                for (std::size_t i = 0; i < node.children.size(); ++i) {
                    std::size_t split = 0;
                    const bool last = i + 1 == node.children.size();
                    if (!last) {
                        split = code.size();
                        code.push_back(Inst{});
                        code[split].op = Op::Split;
                        code[split].x = static_cast<int32_t>(code.size());
                    }
                    emit(*node.children[i]);
                    if (!last) {
                        jumps.push_back(code.size());
                        code.push_back(Inst{});
                        code.back().op = Op::Jmp;
                        code[split].y = static_cast<int32_t>(code.size());
                    }
                }
                for (std::size_t jump : jumps) code[jump].x = static_cast<int32_t>(code.size());
                return;
            }
            case Node::Repeat:
                emit_repeat(node);
                return;
            case Node::Look: {
                const std::size_t look = code.size();
                code.push_back(Inst{});
                code[look].op = Op::Look;
                code[look].negated = node.negated;
                code[look].x = static_cast<int32_t>(code.size());
                emit(*node.children[0]);
                code.push_back(Inst{});  // Match ends the lookahead body
                code[look].y = static_cast<int32_t>(code.size());
                return;
            }
            case Node::Assert: {
                Inst inst;
                inst.op = node.assertion;
                code.push_back(inst);
                return;
            }
        }
    }

    void emit_repeat(const Node& node) {
        const Node& body = *node.children[0];
        if (is_single_char(body)) {
            Inst inst;
            inst.op = Op::RepeatOne;
            inst.item = body.kind == Node::Char ? Op::Char : body.kind == Node::Set ? Op::Set : Op::Any;
            inst.cp = body.cp;
            inst.icase = body.icase;
            inst.set = body.set;
            inst.min = node.min;
            inst.max = node.max;
            inst.mode = node.mode;
            code.push_back(inst);
            return;
        }
        if (node.mode == RepeatMode::Possessive) throw RegexError("a possessive quantifier on a group is not supported");
        for (uint32_t i = 0; i < node.min; ++i) emit(body);
        const bool lazy = node.mode == RepeatMode::Lazy;
        if (node.max == kUnbounded) {
            if (nullable(body)) throw RegexError("an unbounded repetition of a group that can match empty is not supported");
            const std::size_t loop = code.size();
            code.push_back(Inst{});
            code[loop].op = Op::Split;
            emit(body);
            code.push_back(Inst{});
            code.back().op = Op::Jmp;
            code.back().x = static_cast<int32_t>(loop);
            const auto body_start = static_cast<int32_t>(loop + 1);
            const auto out = static_cast<int32_t>(code.size());
            code[loop].x = lazy ? out : body_start;
            code[loop].y = lazy ? body_start : out;
            return;
        }
        std::vector<std::size_t> splits;
        for (uint32_t i = node.min; i < node.max; ++i) {
            splits.push_back(code.size());
            code.push_back(Inst{});
            code.back().op = Op::Split;
            emit(body);
            if (code.size() > kMaxProgramSize) throw RegexError("the pattern is too large once repetitions are expanded");
        }
        const auto out = static_cast<int32_t>(code.size());
        for (std::size_t split : splits) {
            const auto body_start = static_cast<int32_t>(split + 1);
            code[split].x = lazy ? out : body_start;
            code[split].y = lazy ? body_start : out;
        }
    }

    bool item_matches(const Inst& inst, Op item, uint32_t c) const {
        switch (item) {
            case Op::Char:
                if (c == inst.cp) return true;
                return inst.icase && c != kInvalidChar && simple_case_fold(c) == simple_case_fold(inst.cp);
            case Op::Set:
                return sets[inst.set].matches(c);
            default:  // Any
                return c != '\n';
        }
    }

    struct Frame {
        int32_t pc;
        uint32_t pos;
        uint32_t aux;  // greedy retry: lowest end; lazy extension: repetitions so far
        uint8_t kind;  // 0 resume, 1 greedy retry, 2 lazy extension
    };

    // Runs from `pc` at character index `pos`; on success stores the end in `end`.
    bool run(const std::vector<uint32_t>& text, int32_t start_pc, uint32_t start_pos, uint32_t& end,
             std::size_t depth) const {
        thread_local std::deque<std::vector<Frame>> stacks;  // one per lookahead depth; deque keeps references
        while (stacks.size() <= depth) stacks.emplace_back();
        std::vector<Frame>& stack = stacks[depth];
        stack.clear();
        const auto n = static_cast<uint32_t>(text.size());
        int32_t pc = start_pc;
        uint32_t pos = start_pos;
        for (;;) {
            const Inst& inst = code[pc];
            bool ok = true;
            switch (inst.op) {
                case Op::Char:
                case Op::Set:
                case Op::Any:
                    if (pos < n && item_matches(inst, inst.op, text[pos])) {
                        ++pos;
                        ++pc;
                    } else {
                        ok = false;
                    }
                    break;
                case Op::Split:
                    stack.push_back(Frame{inst.y, pos, 0, 0});
                    pc = inst.x;
                    break;
                case Op::Jmp:
                    pc = inst.x;
                    break;
                case Op::Match:
                    end = pos;
                    return true;
                case Op::Look: {
                    bool found;
                    const Inst& first = code[inst.x];
                    if ((first.op == Op::Char || first.op == Op::Set || first.op == Op::Any) &&
                        code[inst.x + 1].op == Op::Match) {
                        found = pos < n && item_matches(first, first.op, text[pos]);  // one-character lookahead
                    } else {
                        uint32_t ignored = 0;
                        found = run(text, inst.x, pos, ignored, depth + 1);
                    }
                    if (found != inst.negated) {
                        pc = inst.y;
                    } else {
                        ok = false;
                    }
                    break;
                }
                case Op::Bol:
                    ok = pos == 0 || text[pos - 1] == '\n';
                    ++pc;
                    break;
                case Op::Eol:
                    ok = pos == n || text[pos] == '\n';
                    ++pc;
                    break;
                case Op::Begin:
                    ok = pos == 0;
                    ++pc;
                    break;
                case Op::End:
                    ok = pos == n;
                    ++pc;
                    break;
                case Op::EndBeforeNewline:
                    ok = pos == n || (pos + 1 == n && text[pos] == '\n');
                    ++pc;
                    break;
                case Op::WordBoundary:
                case Op::NotWordBoundary: {
                    const bool before = pos > 0 && is_word_char(text[pos - 1]);
                    const bool after = pos < n && is_word_char(text[pos]);
                    ok = (before != after) == (inst.op == Op::WordBoundary);
                    ++pc;
                    break;
                }
                case Op::RepeatOne: {
                    if (inst.mode == RepeatMode::Lazy) {
                        uint32_t k = 0;
                        while (k < inst.min && pos + k < n && item_matches(inst, inst.item, text[pos + k])) ++k;
                        if (k < inst.min) {
                            ok = false;
                            break;
                        }
                        pos += k;
                        if (inst.min < inst.max) stack.push_back(Frame{pc, pos, inst.min, 2});
                        ++pc;
                        break;
                    }
                    uint32_t k = 0;
                    while (k < inst.max && pos + k < n && item_matches(inst, inst.item, text[pos + k])) ++k;
                    if (k < inst.min) {
                        ok = false;
                        break;
                    }
                    if (inst.mode == RepeatMode::Greedy && k > inst.min) {
                        stack.push_back(Frame{pc, pos + k - 1, pos + inst.min, 1});
                    }
                    pos += k;
                    ++pc;
                    break;
                }
            }
            if (ok) continue;
            // Backtrack.
            for (;;) {
                if (stack.empty()) return false;
                const Frame frame = stack.back();
                stack.pop_back();
                if (frame.kind == 0) {
                    pc = frame.pc;
                    pos = frame.pos;
                    break;
                }
                if (frame.kind == 1) {
                    if (frame.pos > frame.aux) stack.push_back(Frame{frame.pc, frame.pos - 1, frame.aux, 1});
                    pc = frame.pc + 1;
                    pos = frame.pos;
                    break;
                }
                const Inst& repeat = code[frame.pc];
                if (frame.pos < n && item_matches(repeat, repeat.item, text[frame.pos])) {
                    pos = frame.pos + 1;
                    if (frame.aux + 1 < repeat.max) stack.push_back(Frame{frame.pc, pos, frame.aux + 1, 2});
                    pc = frame.pc + 1;
                    break;
                }
            }
        }
    }
};

Regex::Regex(std::string_view pattern) : program_(std::make_unique<Program>()) {
    Parser parser(pattern, program_->sets);
    const NodePtr root = parser.parse();
    program_->emit(*root);
    program_->code.push_back(Inst{});  // Match
}

Regex::~Regex() = default;

std::vector<std::pair<std::size_t, std::size_t>> Regex::find_all(std::string_view text) const {
    thread_local std::vector<uint32_t> chars;
    thread_local std::vector<std::size_t> offsets;
    chars.clear();
    offsets.clear();
    for (std::size_t pos = 0; pos < text.size();) {
        const Utf8Char c = decode_utf8(text, pos);
        chars.push_back(c.valid ? c.code_point : kInvalidChar);
        offsets.push_back(pos);
        pos += c.length;
    }
    offsets.push_back(text.size());
    const auto n = static_cast<uint32_t>(chars.size());

    std::vector<std::pair<std::size_t, std::size_t>> matches;
    uint32_t search_from = 0;
    bool have_last = false;
    uint32_t last_match_end = 0;
    while (search_from <= n) {
        uint32_t start = search_from, end = 0;
        bool found = false;
        for (; start <= n; ++start) {
            if (program_->run(chars, 0, start, end, 0)) {
                found = true;
                break;
            }
        }
        if (!found) break;
        if (end == start && have_last && last_match_end == end) {
            ++search_from;  // an empty match right after the previous one: step over a character
            continue;
        }
        search_from = end;
        have_last = true;
        last_match_end = end;
        matches.emplace_back(offsets[start], offsets[end]);
    }
    return matches;
}

}  // namespace h2tune::tokenizer_detail
