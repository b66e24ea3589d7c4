#include "h2tune/core/job_config.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <set>
#include <sstream>

#include <boost/program_options.hpp>

#include "h2tune/core/error.h"
#include "h2tune/core/input_file.h"
#include "h2tune/core/methods.h"

namespace po = boost::program_options;

namespace h2tune {

int ClientConfig::effective_rank(int max_rank) const {
    if (rank > 0) return rank;
    if (resource == "low") return std::max(1, max_rank / 4);
    if (resource == "medium") return std::max(1, max_rank / 2);
    return max_rank;
}

namespace {

// ------------------------------------------------------------------ text helpers

std::string trim(const std::string& s) {
    const char* ws = " \t\r\n";
    auto b = s.find_first_not_of(ws);
    if (b == std::string::npos) return "";
    auto e = s.find_last_not_of(ws);
    return s.substr(b, e - b + 1);
}

std::string join(const std::vector<std::string>& items, const std::string& sep) {
    std::string out;
    for (size_t i = 0; i < items.size(); ++i) out += (i ? sep : "") + items[i];
    return out;
}

std::vector<std::string> split_list(const std::string& s) {
    std::vector<std::string> out;
    std::string item;
    std::istringstream in(s);
    while (std::getline(in, item, ',')) {
        item = trim(item);
        if (!item.empty()) out.push_back(item);
    }
    return out;
}

std::string format_double(double v) {
    std::ostringstream os;
    os.precision(10);
    os << v;
    return os.str();
}

// ------------------------------------------------------------------ values with provenance

struct Value {
    std::string text;
    std::string where;  // "file:line" or "command line"
};

[[noreturn]] void bad_value(const std::string& key, const Value& v, const std::string& expected) {
    throw ConfigError(v.where + ": option '" + key + "': " + expected + ", got '" + v.text + "'");
}

long long to_integer(const std::string& key, const Value& v, long long lo, long long hi) {
    const std::string& s = v.text;
    errno = 0;
    char* end = nullptr;
    long long x = std::strtoll(s.c_str(), &end, 10);
    if (s.empty() || end != s.c_str() + s.size() || errno == ERANGE)
        bad_value(key, v, "expected an integer");
    if (x < lo || x > hi)
        bad_value(key, v, "expected an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
    return x;
}

double to_real(const std::string& key, const Value& v, double lo, double hi, bool lo_open) {
    const std::string& s = v.text;
    errno = 0;
    char* end = nullptr;
    double x = std::strtod(s.c_str(), &end);
    if (s.empty() || end != s.c_str() + s.size() || errno == ERANGE || !std::isfinite(x))
        bad_value(key, v, "expected a finite number");
    if ((lo_open ? x <= lo : x < lo) || x > hi)
        bad_value(key, v, "expected a number in " + std::string(lo_open ? "(" : "[") + format_double(lo) +
                              ", " + format_double(hi) + "]");
    return x;
}

// A typed field of one struct: how to set it from text and how to render it back.
template <class S>
struct Field {
    std::string name;
    std::function<void(S&, const std::string& key, const Value&)> set;
    std::function<std::string(const S&)> get;
};

template <class S, class T>
Field<S> int_field(const char* name, T S::*member, long long lo, long long hi) {
    return {name,
            [=](S& s, const std::string& key, const Value& v) { s.*member = static_cast<T>(to_integer(key, v, lo, hi)); },
            [=](const S& s) { return std::to_string(s.*member); }};
}

template <class S>
Field<S> real_field(const char* name, double S::*member, double lo, double hi, bool lo_open = false) {
    return {name, [=](S& s, const std::string& key, const Value& v) { s.*member = to_real(key, v, lo, hi, lo_open); },
            [=](const S& s) { return format_double(s.*member); }};
}

template <class S>
Field<S> choice_field(const char* name, std::string S::*member, std::vector<std::string> choices) {
    return {name,
            [=](S& s, const std::string& key, const Value& v) {
                if (std::find(choices.begin(), choices.end(), v.text) == choices.end())
                    bad_value(key, v, "expected one of " + join(choices, ", "));
                s.*member = v.text;
            },
            [=](const S& s) { return s.*member; }};
}

template <class S>
Field<S> string_field(const char* name, std::string S::*member, bool allow_empty = true) {
    return {name,
            [=](S& s, const std::string& key, const Value& v) {
                if (!allow_empty && v.text.empty()) bad_value(key, v, "expected a non-empty value");
                s.*member = v.text;
            },
            [=](const S& s) { return s.*member; }};
}

template <class S>
Field<S> bool_field(const char* name, bool S::*member) {
    return {name,
            [=](S& s, const std::string& key, const Value& v) {
                static const std::set<std::string> yes = {"1", "true", "yes", "on"}, no = {"0", "false", "no", "off"};
                if (yes.count(v.text)) s.*member = true;
                else if (no.count(v.text)) s.*member = false;
                else bad_value(key, v, "expected true or false");
            },
            [=](const S& s) { return std::string(s.*member ? "true" : "false"); }};
}

const std::vector<Field<RunConfig>>& run_fields() {
    static const std::vector<Field<RunConfig>> f = {
        string_field("name", &RunConfig::name, false),
        choice_field("method", &RunConfig::method, known_methods()),
        int_field("rounds", &RunConfig::rounds, 1, 100000),
        {"seed",
         [](RunConfig& s, const std::string& key, const Value& v) {
             s.seed = static_cast<uint64_t>(to_integer(key, v, 0, (1LL << 62)));
         },
         [](const RunConfig& s) { return std::to_string(s.seed); }},
        string_field("output", &RunConfig::output, false),
        int_field("threads", &RunConfig::threads, 0, 4096),
        bool_field("share_base_models", &RunConfig::share_base_models),
    };
    return f;
}

const std::vector<std::string>& module_names() {
    static const std::vector<std::string> m = {"q", "k", "v", "o", "gate", "up", "down"};
    return m;
}

const std::vector<Field<FederationConfig>>& federation_fields() {
    using F = FederationConfig;
    static const std::vector<Field<F>> f = {
        int_field("max_rank", &F::max_rank, 1, 4096),
        int_field("global_layers", &F::global_layers, 0, 4096),
        real_field("alpha", &F::alpha, 0.0, 1e6, true),
        {"modules",
         [](F& s, const std::string& key, const Value& v) {
             auto items = split_list(v.text);
             if (items.empty()) bad_value(key, v, "expected a comma-separated subset of " + join(module_names(), ","));
             std::set<std::string> seen;
             for (const auto& m : items) {
                 if (std::find(module_names().begin(), module_names().end(), m) == module_names().end())
                     bad_value(key, v, "unknown module '" + m + "', expected a subset of " + join(module_names(), ","));
                 if (!seen.insert(m).second) bad_value(key, v, "module '" + m + "' listed twice");
             }
             s.modules = items;
         },
         [](const F& s) { return join(s.modules, ","); }},
        real_field("participation", &F::participation, 0.0, 1.0, true),
        choice_field("mask", &F::mask, {"topk", "block"}),
        int_field("mask_refresh", &F::mask_refresh, 0, 100000),
        choice_field("mask_score", &F::mask_score, {"magnitude", "taylor"}),
        choice_field("align", &F::align, {"relation", "depth", "end"}),
        real_field("relation_tau", &F::relation_tau, 0.0, 1e6, true),
        real_field("relation_sigma", &F::relation_sigma, 0.0, 1e6, true),
        real_field("relation_lr", &F::relation_lr, 0.0, 10.0),
        real_field("residual_lr", &F::residual_lr, 0.0, 10.0),
        choice_field("alternate", &F::alternate, {"step", "epoch", "none"}),
        real_field("lambda_prox", &F::lambda_prox, 0.0, 1e6),
        real_field("lambda_kd", &F::lambda_kd, 0.0, 1e6),
        real_field("kd_temperature", &F::kd_temperature, 0.0, 1e3, true),
        int_field("checkpoint_every", &F::checkpoint_every, 0, 100000),
        int_field("keep_checkpoints", &F::keep_checkpoints, 1, 1000),
        real_field("round_timeout", &F::round_timeout, 0.0, 1e9),
        real_field("max_abs_value", &F::max_abs_value, 0.0, 1e30),
        int_field("eval_examples", &F::eval_examples, 0, 100000000),
        bool_field("eval_generate", &F::eval_generate),
        bool_field("eval_probes", &F::eval_probes),
    };
    return f;
}

const std::vector<Field<ClientConfig>>& client_fields() {
    using C = ClientConfig;
    static const std::vector<Field<C>> f = {
        string_field("model", &C::model, false),
        string_field("model_dir", &C::model_dir),
        choice_field("model_dtype", &C::model_dtype, {"float32", "bfloat16", "float16"}),
        bool_field("activation_checkpointing", &C::activation_checkpointing),
        string_field("tokenizer", &C::tokenizer),
        string_field("task", &C::task),
        string_field("train_file", &C::train_file),
        string_field("test_file", &C::test_file),
        string_field("labels", &C::labels),
        int_field("rank", &C::rank, 0, 4096),
        choice_field("resource", &C::resource, {"low", "medium", "high"}),
        string_field("shard", &C::shard),
        int_field("train_examples", &C::train_examples, 0, 1LL << 40),
        int_field("test_examples", &C::test_examples, 0, 1LL << 40),
        real_field("lr", &C::lr, 0.0, 10.0, true),
        real_field("weight_decay", &C::weight_decay, 0.0, 10.0),
        int_field("batch_size", &C::batch_size, 1, 1 << 20),
        int_field("local_epochs", &C::local_epochs, 1, 100000),
        int_field("local_steps", &C::local_steps, 0, 1LL << 40),
        int_field("max_seq_len", &C::max_seq_len, 8, 1 << 20),
        int_field("ranks_per_client", &C::ranks_per_client, 1, 1 << 20),
    };
    return f;
}

template <class S>
const Field<S>* find_field(const std::vector<Field<S>>& fields, const std::string& name) {
    for (const auto& f : fields)
        if (f.name == name) return &f;
    return nullptr;
}

// ------------------------------------------------------------------ INI scanning
// Boost.Program_options parses the values but reports neither line numbers nor which section an
// unknown key came from, so the file is scanned once first to attach a line to every key.

struct ScannedIni {
    std::map<std::string, long> line_of;  // "section.key" -> line
    std::set<int> client_ids;
    std::string text;  // the text Program_options parses: section headers trimmed, line for line
};

bool parse_client_section(const std::string& section, int* id) {
    const std::string prefix = "client.";
    if (section.compare(0, prefix.size(), prefix) != 0) return false;
    std::string digits = section.substr(prefix.size());
    if (digits.empty() || digits.size() > 6 || !std::all_of(digits.begin(), digits.end(), ::isdigit)) return false;
    *id = std::stoi(digits);
    return true;
}

ScannedIni scan_ini(const std::string& text, const std::string& source) {
    ScannedIni out;
    // Editors on some systems start UTF-8 files with a byte-order mark; it is not part of the text.
    const bool bom = text.compare(0, 3, "\xEF\xBB\xBF") == 0;
    std::istringstream in(bom ? text.substr(3) : text);
    std::string raw, section;
    long line_no = 0;
    while (std::getline(in, raw)) {
        ++line_no;
        out.text += raw + "\n";
        std::string line = raw;
        auto hash = line.find('#');  // Program_options treats '#' anywhere as a comment start
        if (hash != std::string::npos) line.erase(hash);
        line = trim(line);
        if (line.empty() || line[0] == ';') continue;
        if (line.front() == '[') {
            if (line.back() != ']')
                throw ConfigError(error_at(source, line_no, "malformed section header '" + line + "'"));
            section = trim(line.substr(1, line.size() - 2));
            // "[ client.0 ]" is "[client.0]": Program_options would keep the spaces in the name.
            out.text.resize(out.text.size() - raw.size() - 1);
            out.text += "[" + section + "]\n";
            int id = 0;
            if (section == "run" || section == "federation" || section == "clients") continue;
            if (parse_client_section(section, &id)) {
                out.client_ids.insert(id);
                continue;
            }
            throw ConfigError(error_at(source, line_no,
                                       "unknown section '[" + section +
                                           "]' (expected [run], [federation], [clients] or [client.N])"));
        }
        auto eq = line.find('=');
        if (eq == std::string::npos)
            throw ConfigError(error_at(source, line_no, "expected 'key = value', got '" + line + "'"));
        std::string key = trim(line.substr(0, eq));
        if (key.empty()) throw ConfigError(error_at(source, line_no, "missing key before '='"));
        if (section.empty())
            throw ConfigError(error_at(source, line_no, "key '" + key + "' appears before any [section]"));
        std::string full = section + "." + key;
        auto [it, inserted] = out.line_of.emplace(full, line_no);
        if (!inserted)
            throw ConfigError(error_at(source, line_no, "duplicate key '" + full + "' (first set on line " +
                                                            std::to_string(it->second) + ")"));
    }
    return out;
}

// Which struct a full key belongs to, or "" if unknown.
bool is_known_key(const std::string& full) {
    auto dot = full.rfind('.');
    if (dot == std::string::npos) return false;
    std::string section = full.substr(0, dot), name = full.substr(dot + 1);
    int id = 0;
    if (section == "run") return find_field(run_fields(), name) != nullptr;
    if (section == "federation") return find_field(federation_fields(), name) != nullptr;
    if (section == "clients" || parse_client_section(section, &id)) return find_field(client_fields(), name) != nullptr;
    return false;
}

}  // namespace

std::pair<int64_t, int64_t> ClientConfig::shard_of() const {
    if (shard.empty()) return {0, 1};
    const auto slash = shard.find('/');
    size_t a = 0, b = 0;
    int64_t k = -1, n = 0;
    try {
        if (slash == std::string::npos) throw std::invalid_argument("no slash");
        k = std::stoll(shard.substr(0, slash), &a);
        n = std::stoll(shard.substr(slash + 1), &b);
    } catch (const std::exception&) {
        throw ConfigError("expected K/N (for example 0/3), got '" + shard + "'");
    }
    if (a != slash || b != shard.size() - slash - 1 || n < 1 || k < 0 || k >= n)
        throw ConfigError("expected K/N with 0 <= K < N, got '" + shard + "'");
    return {k, n};
}

namespace {

void validate(JobConfig& cfg) {
    const std::string src = cfg.source.empty() ? "job" : cfg.source;
    if (cfg.clients.empty())
        throw ConfigError(src + ": no clients: add at least one [client.N] section");
    if (cfg.federation.mask_refresh > 0 && cfg.federation.mask != "topk")
        throw ConfigError(src + ": option 'federation.mask_refresh': re-selection needs federation.mask = topk "
                          "(a block mask is fixed by the rank)");
    const int R = cfg.federation.max_rank;
    for (const auto& c : cfg.clients) {
        const std::string key = "client." + std::to_string(c.index);
        int r = c.effective_rank(R);
        if (r > R)
            throw ConfigError(src + ": option '" + key + ".rank': rank " + std::to_string(r) +
                              " exceeds federation.max_rank = " + std::to_string(R));
        if (!c.shard.empty()) {
            try {
                (void)c.shard_of();
            } catch (const ConfigError& e) {
                throw ConfigError(src + ": option '" + key + ".shard': " + e.what());
            }
        }
        if (c.task.empty() && (c.train_file.empty() || c.test_file.empty()))
            throw ConfigError(src + ": " + key + ": give either 'task' or both 'train_file' and 'test_file'");
    }
}

// The settings the method implies (its entry in core/methods.h), over whatever the job said:
// an ablation is H2Tune with exactly that change, and the resolved job records it.
void apply_method_settings(JobConfig& cfg) {
    const MethodSpec& method = method_spec(cfg.run.method);
    const auto current = [&cfg](const std::string& key) -> std::string {
        const auto dot = key.find('.');
        const std::string section = key.substr(0, dot), name = key.substr(dot + 1);
        if (section == "run") return find_field(run_fields(), name)->get(cfg.run);
        return find_field(federation_fields(), name)->get(cfg.federation);
    };
    for (const auto& s : method.implies) {
        const std::string value = s.value.compare(0, 1, "=") == 0 ? current(s.value.substr(1)) : s.value;
        const Value v{value, "run.method = " + method.name};
        const auto dot = s.key.rfind('.');
        const std::string section = s.key.substr(0, dot), name = s.key.substr(dot + 1);
        if (section == "client.*") {
            for (auto& c : cfg.clients) find_field(client_fields(), name)->set(c, "client." + std::to_string(c.index) + "." + name, v);
        } else if (section == "federation") {
            find_field(federation_fields(), name)->set(cfg.federation, s.key, v);
        } else {
            find_field(run_fields(), name)->set(cfg.run, s.key, v);
        }
    }
}

}  // namespace

JobConfig parse_job_config(const std::string& text, const std::string& source, const ConfigOverrides& overrides) {
    ScannedIni scanned = scan_ini(text, source);

    // Register every key the file may hold (clients by the indices it declares) with
    // Program_options, which parses the values.
    po::options_description desc;
    auto add_all = [&desc](const std::string& section, const auto& fields) {
        for (const auto& f : fields) desc.add_options()((section + "." + f.name).c_str(), po::value<std::string>());
    };
    add_all("run", run_fields());
    add_all("federation", federation_fields());
    add_all("clients", client_fields());
    for (int id : scanned.client_ids) add_all("client." + std::to_string(id), client_fields());

    std::map<std::string, Value> values;
    try {
        std::istringstream in(scanned.text);
        po::parsed_options parsed = po::parse_config_file(in, desc, /*allow_unregistered=*/true);
        for (const auto& opt : parsed.options) {
            auto it = scanned.line_of.find(opt.string_key);
            std::string where = it == scanned.line_of.end() ? source : source + ":" + std::to_string(it->second);
            if (opt.unregistered)
                throw ConfigError(where + ": unknown key '" + opt.string_key + "'");
            values[opt.string_key] = Value{opt.value.empty() ? std::string() : trim(opt.value.front()), where};
        }
    } catch (const po::error& e) {
        throw ConfigError(source + ": " + e.what());
    }

    for (const auto& [key, text_value] : overrides) {
        if (!is_known_key(key))
            throw ConfigError("command line: unknown key '" + key + "'");
        int id = 0;
        auto dot = key.rfind('.');
        if (parse_client_section(key.substr(0, dot), &id) && !scanned.client_ids.count(id))
            throw ConfigError("command line: option '" + key + "': the job has no [client." + std::to_string(id) + "]");
        values[key] = Value{trim(text_value), "command line"};
    }

    JobConfig cfg;
    cfg.source = source;
    auto apply = [&values](const std::string& section, const auto& fields, auto& target) {
        for (const auto& f : fields) {
            auto it = values.find(section + "." + f.name);
            if (it != values.end()) f.set(target, it->first, it->second);
        }
    };
    apply("run", run_fields(), cfg.run);
    apply("federation", federation_fields(), cfg.federation);
    ClientConfig defaults;
    apply("clients", client_fields(), defaults);
    for (int id : scanned.client_ids) {
        ClientConfig c = defaults;
        c.index = id;
        apply("client." + std::to_string(id), client_fields(), c);
        cfg.clients.push_back(c);
    }
    // Clients are numbered 0..K-1 so that metrics datasets index them directly.
    for (size_t i = 0; i < cfg.clients.size(); ++i) {
        if (cfg.clients[i].index != static_cast<int>(i)) {
            std::string key = "client." + std::to_string(cfg.clients[i].index);
            throw ConfigError(source + ": section [" + key + "]: clients must be numbered 0.." +
                              std::to_string(cfg.clients.size() - 1) + " without gaps");
        }
    }
    apply_method_settings(cfg);
    validate(cfg);

    for (const auto& f : run_fields()) cfg.resolved["run." + f.name] = f.get(cfg.run);
    for (const auto& f : federation_fields()) cfg.resolved["federation." + f.name] = f.get(cfg.federation);
    for (const auto& c : cfg.clients)
        for (const auto& f : client_fields()) cfg.resolved["client." + std::to_string(c.index) + "." + f.name] = f.get(c);
    return cfg;
}

JobConfig load_job_config(const std::string& path, const ConfigOverrides& overrides) {
    static const InputFileRule kJobFile{"job file", 4u << 20};
    return parse_job_config(read_input_file(path, kJobFile, InputErrorKind::kConfig), path, overrides);
}

std::string job_config_to_ini(const JobConfig& config) {
    std::string out;
    std::string current;
    for (const auto& [key, value] : config.resolved) {
        auto dot = key.rfind('.');
        std::string section = key.substr(0, dot);
        if (section != current) {
            out += (out.empty() ? "" : "\n") + std::string("[") + section + "]\n";
            current = section;
        }
        out += key.substr(dot + 1) + " = " + value + "\n";
    }
    return out;
}

}  // namespace h2tune
