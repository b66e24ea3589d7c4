// `h2tune report`: reads metrics.h5 files and prints (and optionally writes) tables.
//
// One run: one row per client (the original per-run table). Several runs (or a directory that
// holds several, searched recursively): runs of the same scenario (the job's [run] name), the same
// method and the same configuration apart from seed, output and threads form a group, and the
// tables give per client and per (scenario, method) the mean and standard deviation over the
// group's seeds.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <set>
#include <sstream>

#include "h2tune/app/cli.h"
#include "h2tune/app/command_options.h"
#include "h2tune/core/error.h"
#include "h2tune/core/methods.h"
#include "h2tune/core/paired_difference.h"
#include "h2tune/core/shape_text.h"
#include "h2tune/io/hdf5_file.h"

namespace po = boost::program_options;
namespace fs = std::filesystem;

namespace h2tune {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

struct RunSummary {
    std::string path, method;
    int64_t clients = 0, rounds = 0, rounds_planned = 0;
    std::vector<std::string> names;
    std::vector<double> majority, final_acc, final_gen, best_acc, bytes_up, bytes_down, seconds;
    std::vector<int64_t> best_round;
    std::vector<int64_t> final_round;  // the round "final" refers to per client (-1: never evaluated)
    // Used by the grouped tables.
    std::map<std::string, std::string> config;  // "section.key" -> value, from /config
    std::string scenario, seed;
    std::vector<double> rank, group, rounds_in;
    double wall_seconds = 0;  // sum of /rounds/round_seconds
    // Provenance: which code, machine and weights produced the numbers ("" where an older file
    // does not record it).
    std::string git_sha, cpu_model, torch_version;
    std::vector<std::string> base_models;  // per client: the base model files' fingerprint
    // federation.eval_probes: per client, the final round's accuracy without the downloaded
    // mixture and without T (NaN where the run did not measure them).
    std::vector<double> final_no_download, final_no_middle;
};

// "section.key" -> value of the resolved job stored as /config.
std::map<std::string, std::string> parse_config(const std::string& text) {
    std::map<std::string, std::string> out;
    std::istringstream in(text);
    std::string line, section;
    auto trim = [](std::string s) {
        const auto b = s.find_first_not_of(" \t\r");
        const auto e = s.find_last_not_of(" \t\r");
        return b == std::string::npos ? std::string() : s.substr(b, e - b + 1);
    };
    while (std::getline(in, line)) {
        line = trim(line);
        if (line.empty() || line[0] == '#') continue;
        if (line.front() == '[' && line.back() == ']') {
            section = line.substr(1, line.size() - 2);
            continue;
        }
        const auto eq = line.find('=');
        if (eq == std::string::npos) continue;
        out[section + "." + trim(line.substr(0, eq))] = trim(line.substr(eq + 1));
    }
    return out;
}

std::string metrics_path_of(const std::string& dir_or_file) {
    std::string path = dir_or_file;
    if (path.size() < 3 || path.substr(path.size() - 3) != ".h5") path += "/metrics.h5";
    return path;
}

// A dataset of the metrics file with the shape the report indexes it by; a file edited or written
// by another tool gets an error naming the dataset instead of an out-of-bounds read.
std::vector<double> read_shaped(const Hdf5File& f, const std::string& path, const std::string& name,
                                const std::vector<int64_t>& shape, const char* meaning) {
    const std::vector<int64_t> found = f.dataset_shape(name);
    if (found != shape)
        throw DataError(path + ":" + name + " has shape " + shape_string(found) + ", expected " +
                        shape_string(shape) + " (" + meaning + ")");
    return f.read_doubles(name);
}

// The per-round tables the report reads, in the order summarise() unpacks them.
constexpr const char* kReportedMetrics[] = {"/metrics/test_accuracy", "/metrics/test_accuracy_generate",
                                            "/metrics/bytes_up",      "/metrics/bytes_down",
                                            "/metrics/train_seconds", "/metrics/eval_seconds"};

// The number of rounds most of the tables agree on, so that the one table that disagrees (edited,
// or written by another tool) is the one the error names.
template <std::size_t N>
int64_t rounds_recorded(const Hdf5File& f, const char* const (&names)[N]) {
    std::map<int64_t, int> votes;
    for (const char* name : names) {
        const auto shape = f.dataset_shape(name);
        ++votes[shape.empty() ? 0 : shape.front()];
    }
    return std::max_element(votes.begin(), votes.end(), [](const auto& a, const auto& b) { return a.second < b.second; })
        ->first;
}

// The probes' values in the round that gave each client its final accuracy (files from before
// federation.eval_probes, or runs without it, hold none: NaN).
void read_final_probes(const Hdf5File& f, RunSummary& s) {
    const int64_t K = s.clients;
    const auto final_of = [&](const char* name) {
        std::vector<double> out(static_cast<size_t>(K), kNaN);
        if (!f.exists(name)) return out;
        const std::vector<double> v = read_shaped(f, s.path, name, {s.rounds, K}, "rounds x num_clients");
        for (int64_t k = 0; k < K; ++k) {
            const int64_t r = s.final_round[static_cast<size_t>(k)];
            const double value = r >= 0 ? v[static_cast<size_t>(r * K + k)] : -1.0;
            if (value >= 0) out[static_cast<size_t>(k)] = value;  // -1: not measured
        }
        return out;
    };
    s.final_no_download = final_of("/metrics/test_accuracy_no_download");
    s.final_no_middle = final_of("/metrics/test_accuracy_no_middle");
}

RunSummary summarise(const std::string& dir_or_file) {
    const std::string path = metrics_path_of(dir_or_file);
    Hdf5File f(path, Hdf5File::Mode::ReadOnly);
    RunSummary s;
    s.path = path;
    s.method = f.string_attribute("/", "method");
    s.clients = f.int_attribute("/", "num_clients");
    if (s.clients < 1 || !f.exists("/clients/majority_rate") ||
        f.dataset_shape("/clients/majority_rate") != std::vector<int64_t>{s.clients})
        throw DataError(path + ": attribute num_clients " + std::to_string(s.clients) +
                        " does not match /clients/majority_rate; not a metrics file h2tune wrote");
    s.rounds_planned = f.has_attribute("/", "rounds_planned") ? f.int_attribute("/", "rounds_planned") : 0;
    s.rounds = rounds_recorded(f, kReportedMetrics);
    if (s.rounds == 0) throw DataError(path + ": no completed rounds");
    const int64_t K = s.clients;
    const std::vector<int64_t> per_round{s.rounds, K};
    const char* kPerRound = "rounds x num_clients";
    std::vector<std::vector<double>> tables;
    for (const char* name : kReportedMetrics) tables.push_back(read_shaped(f, path, name, per_round, kPerRound));
    const auto &acc = tables[0], &gen = tables[1], &up = tables[2], &down = tables[3], &train_s = tables[4],
               &eval_s = tables[5];
    s.majority = f.read_doubles("/clients/majority_rate");
    auto finite_or_zero = [](double v) { return std::isfinite(v) ? v : 0.0; };
    for (int64_t k = 0; k < K; ++k) {
        s.names.push_back(f.string_attribute("/clients", "name_" + std::to_string(k)));
        double best = -1, tu = 0, td = 0, sec = 0, last_acc = kNaN, last_gen = kNaN, in = 0;
        int64_t best_r = 0, last_r = -1;
        for (int64_t r = 0; r < s.rounds; ++r) {
            const size_t i = static_cast<size_t>(r * K + k);
            if (acc[i] > best) {
                best = acc[i];
                best_r = r;
            }
            // "Final" is the last round the client was evaluated in (with partial participation
            // a client that sat out the last round has NaN there).
            if (std::isfinite(acc[i])) {
                last_acc = acc[i];
                last_gen = gen[i];
                last_r = r;
                in += 1;
            }
            tu += finite_or_zero(up[i]);
            td += finite_or_zero(down[i]);
            sec += finite_or_zero(train_s[i]) + finite_or_zero(eval_s[i]);
        }
        s.final_acc.push_back(last_acc);
        s.final_gen.push_back(last_gen);
        s.best_acc.push_back(best);
        s.best_round.push_back(best_r);
        s.final_round.push_back(last_r);
        s.bytes_up.push_back(tu);
        s.bytes_down.push_back(td);
        s.seconds.push_back(sec);
        s.rounds_in.push_back(in);
    }
    if (f.exists("/config")) s.config = parse_config(f.read_string("/config"));
    s.scenario = s.config.count("run.name") ? s.config["run.name"] : "(unnamed)";
    s.seed = s.config.count("run.seed") ? s.config["run.seed"] : "?";
    s.rank = f.exists("/clients/rank") ? read_shaped(f, path, "/clients/rank", {K}, "num_clients")
                                       : std::vector<double>(K, kNaN);
    s.group = f.exists("/clients/group") ? read_shaped(f, path, "/clients/group", {K}, "num_clients")
                                         : std::vector<double>();
    if (f.exists("/rounds/round_seconds"))
        for (double v : f.read_doubles("/rounds/round_seconds")) s.wall_seconds += finite_or_zero(v);
    const auto root_text = [&f](const char* name) { return f.has_attribute("/", name) ? f.string_attribute("/", name) : ""; };
    s.git_sha = root_text("git_sha");
    s.cpu_model = root_text("cpu_model");
    s.torch_version = root_text("torch_version");
    for (int64_t k = 0; k < K; ++k) {
        const std::string name = "base_model_" + std::to_string(k);
        s.base_models.push_back(f.has_attribute("/clients", name) ? f.string_attribute("/clients", name) : "");
    }
    read_final_probes(f, s);
    return s;
}

// ---------------------------------------------------------------------------- provenance

// Notes end the markdown and go to stderr, in the order they were taken.
using Notes = std::vector<std::string>;

void print_notes(const Notes& notes) {
    for (const auto& n : notes) std::fprintf(stderr, "h2tune report: %s\n", n.c_str());
}


// A fingerprint ("<file> <size>:<hash>" per line) on one line.
std::string one_line(const std::string& fingerprint) {
    std::string out;
    std::istringstream in(fingerprint);
    for (std::string line; std::getline(in, line);)
        if (!line.empty()) out += (out.empty() ? "" : "; ") + line;
    return out;
}

// Which weights, code and machine produced the tables: every distinct base model (by its files'
// fingerprint) with the model names and runs that used it, then the git shas, CPUs and LibTorch
// versions with their run counts. A model name that stands for different weights in different
// runs gets a note: a different model, not a different result.
std::string provenance_table(const std::vector<const RunSummary*>& runs, Notes& notes) {
    struct Weights {
        std::set<std::string> models, runs;
    };
    std::map<std::string, Weights> weights;                 // fingerprint -> users
    std::map<std::string, std::set<std::string>> of_model;  // model name -> fingerprints
    std::map<std::string, std::map<std::string, int>> facts;  // "git sha" / "CPU" / "LibTorch" -> value -> runs
    for (const RunSummary* r : runs) {
        for (size_t k = 0; k < r->names.size(); ++k) {
            const std::string model = r->names[k].substr(0, r->names[k].find('/'));
            const std::string print = k < r->base_models.size() && !r->base_models[k].empty()
                                          ? one_line(r->base_models[k]) : "(not recorded)";
            weights[print].models.insert(model);
            weights[print].runs.insert(r->path);
            of_model[model].insert(print);
        }
        ++facts["git sha"][r->git_sha.empty() ? "(not recorded)" : r->git_sha];
        ++facts["CPU"][r->cpu_model.empty() ? "(not recorded)" : r->cpu_model];
        ++facts["LibTorch"][r->torch_version.empty() ? "(not recorded)" : r->torch_version];
    }
    for (const auto& [model, prints] : of_model)
        if (prints.size() > 1)
            notes.push_back(model + ": " + std::to_string(prints.size()) +
                            " different base-model weights across these runs (see Provenance): rows of this model "
                            "compare different models, not only different results");
    std::ostringstream out;
    out << "## Provenance (the base models' files, code and machine behind these tables)\n\n"
        << "| model | base model files (size:FNV-1a 64) | runs |\n|---|---|---|\n";
    for (const auto& [print, w] : weights) {
        std::string models;
        for (const auto& m : w.models) models += (models.empty() ? "" : ", ") + m;
        out << "| " << models << " | " << print << " | " << w.runs.size() << " |\n";
    }
    out << "\n| recorded | value | runs |\n|---|---|---|\n";
    for (const auto& [what, values] : facts)
        for (const auto& [value, count] : values) out << "| " << what << " | " << value << " | " << count << " |\n";
    return out.str();
}

// The original table: one row per client of each run.
void per_run_tables(const std::vector<std::string>& runs, std::ostringstream& md, std::ostringstream& csv) {
    std::vector<RunSummary> summaries;
    md << "| run | method | client | majority | final acc (score) | final acc (generate) | best acc | best round | "
          "bytes up | bytes down | seconds |\n|---|---|---|---|---|---|---|---|---|---|---|\n";
    csv << "run,method,client,name,majority,final_accuracy,final_accuracy_generate,best_accuracy,best_round,bytes_up,"
           "bytes_down,seconds\n";
    for (const auto& run : runs) {
        summaries.push_back(summarise(run));
        const RunSummary& s = summaries.back();
        for (int64_t k = 0; k < s.clients; ++k) {
            const size_t i = static_cast<size_t>(k);
            char line[1024];
            std::snprintf(line, sizeof line, "| %s | %s | %lld %s | %.3f | %.3f | %.3f | %.3f | %lld | %.0f | %.0f | %.1f |\n",
                          s.path.c_str(), s.method.c_str(), static_cast<long long>(k), s.names[i].c_str(), s.majority[i],
                          s.final_acc[i], s.final_gen[i], s.best_acc[i], static_cast<long long>(s.best_round[i]),
                          s.bytes_up[i], s.bytes_down[i], s.seconds[i]);
            md << line;
            std::snprintf(line, sizeof line, "%s,%s,%lld,%s,%.6f,%.6f,%.6f,%.6f,%lld,%.0f,%.0f,%.3f\n", s.path.c_str(),
                          s.method.c_str(), static_cast<long long>(k), s.names[i].c_str(), s.majority[i], s.final_acc[i],
                          s.final_gen[i], s.best_acc[i], static_cast<long long>(s.best_round[i]), s.bytes_up[i],
                          s.bytes_down[i], s.seconds[i]);
            csv << line;
        }
    }
    std::vector<const RunSummary*> pointers;
    for (const auto& r : summaries) pointers.push_back(&r);
    Notes notes;
    md << "\n" << provenance_table(pointers, notes);
    if (!notes.empty()) {
        md << "\nNotes:\n\n";
        for (const auto& n : notes) md << "* " << n << "\n";
        print_notes(notes);
    }
}

// ---------------------------------------------------------------------------- grouped tables

// A run directory (or metrics.h5) as given, or every run below a directory that is not itself a
// run (checkpoint directories, which hold a copy of metrics.h5, are not searched).
void expand_run(const std::string& arg, std::vector<std::string>& out) {
    const fs::path p(arg);
    if (!fs::exists(p)) throw DataError(arg + ": no such file or directory");
    if (!fs::is_directory(p) || fs::exists(p / "metrics.h5")) {
        out.push_back(arg);
        return;
    }
    std::vector<std::string> found;
    for (auto it = fs::recursive_directory_iterator(p); it != fs::recursive_directory_iterator(); ++it) {
        if (!it->is_directory()) continue;
        if (it->path().filename() == "checkpoints") {
            it.disable_recursion_pending();
            continue;
        }
        if (fs::exists(it->path() / "metrics.h5")) {
            found.push_back(it->path().string());
            it.disable_recursion_pending();
        }
    }
    if (found.empty()) throw DataError(arg + ": no metrics.h5 in this directory or below it");
    std::sort(found.begin(), found.end());
    out.insert(out.end(), found.begin(), found.end());
}

struct Stats {
    double mean = kNaN, std = kNaN;
    size_t n = 0;
};

// Mean and sample standard deviation (n - 1) of the finite values.
Stats stats_of(const std::vector<double>& v) {
    Stats s;
    double sum = 0;
    for (double x : v)
        if (std::isfinite(x)) {
            sum += x;
            ++s.n;
        }
    if (s.n == 0) return s;
    s.mean = sum / static_cast<double>(s.n);
    if (s.n > 1) {
        double ss = 0;
        for (double x : v)
            if (std::isfinite(x)) ss += (x - s.mean) * (x - s.mean);
        s.std = std::sqrt(ss / static_cast<double>(s.n - 1));
    }
    return s;
}

std::string fmt(const char* f, double v) {
    if (!std::isfinite(v)) return "-";
    char b[64];
    std::snprintf(b, sizeof b, f, v);
    return b;
}

std::string csv_num(const char* f, double v) { return std::isfinite(v) ? fmt(f, v) : std::string(); }

std::string csv_field(const std::string& s) {
    if (s.find_first_of(",\"\n") == std::string::npos) return s;
    std::string q = "\"";
    for (char c : s) q += c == '"' ? std::string("\"\"") : std::string(1, c);
    return q + "\"";
}

std::string human_bytes(double b) {
    if (!std::isfinite(b)) return "-";
    // Binary units, as `h2tune train` prints them.
    if (b < 1024) return fmt("%.0f B", b);
    if (b < 1024.0 * 1024) return fmt("%.1f KiB", b / 1024);
    if (b < 1024.0 * 1024 * 1024) return fmt("%.2f MiB", b / (1024.0 * 1024));
    return fmt("%.2f GiB", b / (1024.0 * 1024 * 1024));
}

std::string mean_pm_std(const Stats& s) {
    if (s.n == 0) return "-";
    return fmt("%.3f", s.mean) + (s.n > 1 ? " ± " + fmt("%.3f", s.std) : std::string());
}

// Everything of a run's configuration that should be equal among the seeds of one group, and
// the keys its method sets by itself.
struct RunConfig {
    std::map<std::string, std::string> values;
    std::set<std::string> implied;
    // "" for a key the run does not have (written by an older version: the default), "*" for a
    // key its method sets.
    std::string value(const std::string& key) const {
        if (implied.count(key)) return "*";
        auto it = values.find(key);
        return it == values.end() ? std::string() : it->second;
    }
};

RunConfig variant_config(const RunSummary& s) {
    RunConfig c;
    c.values = s.config;
    for (const char* k : {"run.seed", "run.output", "run.threads", "run.method", "run.name"}) c.values.erase(k);
    // How many ranks train a client changes its results only in the last bits, as threads do.
    for (auto it = c.values.begin(); it != c.values.end();)
        it = it->first.size() > 17 && it->first.compare(it->first.size() - 17, 17, ".ranks_per_client") == 0
                 ? c.values.erase(it) : std::next(it);
    // The ablations write what they change into the resolved job (the job config applies the
    // settings the method table says they imply); that is part of the method, not of the scenario.
    c.implied = method_implied_keys(s.method, s.clients);
    return c;
}

bool same_variant(const RunConfig& a, const RunConfig& b) {
    std::set<std::string> keys;
    for (const auto& kv : a.values) keys.insert(kv.first);
    for (const auto& kv : b.values) keys.insert(kv.first);
    for (const auto& key : keys) {
        if (a.implied.count(key) || b.implied.count(key)) continue;
        if (a.value(key) != b.value(key)) return false;
    }
    return true;
}

// The value a variant (its runs' configurations) has for `key`: that of the first run whose
// method does not set it, else "*".
std::string variant_value(const std::vector<RunConfig>& members, const std::string& key) {
    for (const auto& m : members)
        if (!m.implied.count(key)) return m.value(key);
    return "*";
}

struct Group {
    std::string scenario, label, method;
    size_t scenario_order = 0, variant = 0;
    std::vector<const RunSummary*> runs;
};


// The complete runs among `paths`; a path given twice, an unreadable run and one that stopped
// before its planned rounds are skipped with a note.
std::vector<RunSummary> load_complete_runs(const std::vector<std::string>& paths, Notes& notes) {
    std::vector<RunSummary> runs;
    std::set<std::string> seen;
    for (const auto& p : paths) {
        std::error_code ec;
        const auto canon = fs::weakly_canonical(metrics_path_of(p), ec).string();
        if (!seen.insert(ec ? p : canon).second) {
            notes.push_back("skipped " + p + ": given twice");
            continue;
        }
        try {
            RunSummary s = summarise(p);
            if (s.rounds_planned > 0 && s.rounds < s.rounds_planned) {
                notes.push_back("skipped " + s.path + ": incomplete (" + std::to_string(s.rounds) + " of " +
                                std::to_string(s.rounds_planned) + " rounds)");
                continue;
            }
            runs.push_back(std::move(s));
        } catch (const Error& e) {
            notes.push_back(std::string("skipped ") + p + ": " + e.what());
        }
    }
    if (runs.empty()) {
        print_notes(notes);
        throw DataError("report: no complete run to summarise");
    }
    return runs;
}

// Each scenario's distinct configurations (variants), and which variant each run belongs to.
struct Variants {
    std::vector<std::string> scenarios;                                      // in the order first seen
    std::map<std::string, std::vector<std::vector<RunConfig>>> of_scenario;  // variants in the order first seen
    std::vector<size_t> of_run;                                              // runs[i]'s index in its scenario's
};

// A run joins the first variant of its scenario whose every run has its configuration.
Variants find_variants(const std::vector<RunSummary>& runs) {
    Variants out;
    out.of_run.resize(runs.size());
    for (size_t i = 0; i < runs.size(); ++i) {
        const auto& sc = runs[i].scenario;
        if (!out.of_scenario.count(sc)) out.scenarios.push_back(sc);
        auto& vs = out.of_scenario[sc];
        const RunConfig rc = variant_config(runs[i]);
        auto it = std::find_if(vs.begin(), vs.end(), [&](const std::vector<RunConfig>& members) {
            return std::all_of(members.begin(), members.end(), [&](const RunConfig& m) { return same_variant(m, rc); });
        });
        out.of_run[i] = static_cast<size_t>(it - vs.begin());
        if (it == vs.end())
            vs.push_back({rc});
        else
            it->push_back(rc);
    }
    return out;
}

// The keys whose values differ among the variants `vs` (a key a variant's method sets does not count).
std::vector<std::string> differing_keys(const std::vector<std::vector<RunConfig>>& vs) {
    std::set<std::string> keys;
    for (const auto& members : vs)
        for (const auto& m : members)
            for (const auto& kv : m.values) keys.insert(kv.first);
    std::vector<std::string> differing;
    for (const auto& key : keys) {
        std::set<std::string> values;
        for (const auto& members : vs) {
            const std::string v = variant_value(members, key);
            if (v != "*") values.insert(v);
        }
        if (values.size() > 1) differing.push_back(key);
    }
    return differing;
}

using VariantLabels = std::map<std::pair<std::string, size_t>, std::string>;  // (scenario, variant) -> label

// A scenario run with different settings is split; each part is labelled with the keys that differ.
void label_split_scenario(const std::string& sc, const std::vector<std::vector<RunConfig>>& vs, VariantLabels& labels,
                          Notes& notes) {
    const std::vector<std::string> differing = differing_keys(vs);
    std::string list;
    for (const auto& d : differing) list += " " + d;
    notes.push_back("scenario " + sc + " has " + std::to_string(vs.size()) +
                    " configurations, reported separately; they differ in:" + list);
    // With up to three differing keys their values make a unique label; otherwise number the
    // configurations and say how each differs from the first.
    auto shown = [](const std::string& v) { return v.empty() ? std::string("(default)") : v; };
    for (size_t v = 0; v < vs.size(); ++v) {
        if (differing.size() <= 3) {
            std::string values;
            for (size_t d = 0; d < differing.size(); ++d)
                values += (d ? ", " : "") + differing[d] + "=" + shown(variant_value(vs[v], differing[d]));
            labels[{sc, v}] = sc + " [" + values + "]";
            continue;
        }
        labels[{sc, v}] = sc + " #" + std::to_string(v + 1);
        if (v == 0) continue;
        std::string diff;
        for (const auto& key : differing) {
            const std::string mine = variant_value(vs[v], key), first = variant_value(vs[0], key);
            if (mine != first)
                diff += (diff.empty() ? "" : ", ") + key + "=" + shown(mine) + " (#1: " + shown(first) + ")";
        }
        notes.push_back(labels[{sc, v}] + ": " + diff);
    }
}

VariantLabels label_variants(const Variants& variants, Notes& notes) {
    VariantLabels labels;
    for (const auto& sc : variants.scenarios) {
        const auto& vs = variants.of_scenario.at(sc);
        if (vs.size() == 1)
            labels[{sc, 0}] = sc;
        else
            label_split_scenario(sc, vs, labels, notes);
    }
    return labels;
}

// Runs of the same scenario, variant and method, ordered by scenario (first seen), variant and
// the method table.
std::vector<Group> form_groups(const std::vector<RunSummary>& runs, const Variants& variants,
                               const VariantLabels& labels) {
    std::vector<Group> groups;
    for (size_t i = 0; i < runs.size(); ++i) {
        const auto& r = runs[i];
        const size_t variant = variants.of_run[i];
        auto it = std::find_if(groups.begin(), groups.end(), [&](const Group& g) {
            return g.scenario == r.scenario && g.variant == variant && g.method == r.method;
        });
        if (it == groups.end()) {
            Group g;
            g.scenario = r.scenario;
            g.variant = variant;
            g.method = r.method;
            g.label = labels.at({r.scenario, variant});
            const auto& scenarios = variants.scenarios;
            g.scenario_order =
                static_cast<size_t>(std::find(scenarios.begin(), scenarios.end(), r.scenario) - scenarios.begin());
            groups.push_back(g);
            it = groups.end() - 1;
        }
        if (!it->runs.empty() && it->runs.front()->clients != r.clients)
            throw DataError(r.path + ": " + std::to_string(r.clients) + " clients, but " + it->runs.front()->path +
                            " of the same scenario and method has " + std::to_string(it->runs.front()->clients));
        it->runs.push_back(&r);
    }
    std::stable_sort(groups.begin(), groups.end(), [](const Group& a, const Group& b) {
        if (a.scenario_order != b.scenario_order) return a.scenario_order < b.scenario_order;
        if (a.variant != b.variant) return a.variant < b.variant;
        return method_order(a.method) < method_order(b.method) ||
               (method_order(a.method) == method_order(b.method) && a.method < b.method);
    });
    return groups;
}

// Orders each group's runs by seed (shorter first, so that numeric seeds sort numerically) and notes
// seeds run twice.
void sort_by_seed(std::vector<Group>& groups, Notes& notes) {
    for (auto& g : groups) {
        std::sort(g.runs.begin(), g.runs.end(), [](const RunSummary* a, const RunSummary* b) {
            return a->seed.size() != b->seed.size() ? a->seed.size() < b->seed.size() : a->seed < b->seed;
        });
        std::set<std::string> seeds, repeated;
        for (const auto* r : g.runs)
            if (!seeds.insert(r->seed).second) repeated.insert(r->seed);
        std::string rep;
        for (const auto& x : repeated) rep += " " + x;
        if (!repeated.empty())
            notes.push_back(g.label + " / " + g.method + ": repeated seeds (runs counted as seeds anyway):" + rep);
    }
}

std::string seed_list(const Group& g) {
    std::string list;
    for (const auto* r : g.runs) list += (list.empty() ? "" : " ") + r->seed;
    return list;
}

// One client's values in each of a group's runs.
struct ClientOverSeeds {
    std::vector<double> fin, gen, best, up, down, sec, in, maj, best_r;
    int64_t best_round_mode = -1;  // -1: evaluated in none of the runs
};

ClientOverSeeds client_over_seeds(const Group& g, size_t k) {
    ClientOverSeeds c;
    std::map<int64_t, int> round_votes;
    for (const auto* r : g.runs) {
        c.fin.push_back(r->final_acc[k]);
        c.gen.push_back(r->final_gen[k] >= 0 ? r->final_gen[k] : kNaN);  // -1: generation not evaluated
        c.best.push_back(r->best_acc[k] >= 0 ? r->best_acc[k] : kNaN);
        c.up.push_back(r->bytes_up[k]);
        c.down.push_back(r->bytes_down[k]);
        c.sec.push_back(r->seconds[k]);
        c.in.push_back(r->rounds_in[k]);
        c.maj.push_back(r->majority[k]);
        if (r->best_acc[k] >= 0) {
            c.best_r.push_back(static_cast<double>(r->best_round[k]));
            ++round_votes[r->best_round[k]];
        }
    }
    // Ties go to the earliest round.
    int votes = 0;
    for (const auto& [round, v] : round_votes)
        if (v > votes) {
            c.best_round_mode = round;
            votes = v;
        }
    return c;
}

void write_client_row(const Group& g, size_t k, const std::string& seeds, std::ostringstream& md,
                      std::ostringstream& csv) {
    const RunSummary& first = *g.runs.front();
    const ClientOverSeeds c = client_over_seeds(g, k);
    const int64_t mode = c.best_round_mode;
    const Stats f = stats_of(c.fin);
    const auto shard_it = first.config.find("client." + std::to_string(k) + ".shard");
    const std::string shard = shard_it == first.config.end() ? "" : shard_it->second;
    const std::string name = first.names[k] + (shard.empty() ? "" : " " + shard);
    const double grp = k < first.group.size() ? first.group[k] : kNaN;
    const std::string grp_s = std::isfinite(grp) && grp >= 0 ? fmt("%.0f", grp) : "-";
    const std::string mode_s = mode >= 0 ? std::to_string(mode) : "-";
    md << "| " << g.label << " | " << g.method << " | " << k << " " << name << " | " << fmt("%.0f", first.rank[k])
       << " | " << grp_s << " | " << fmt("%.3f", stats_of(c.maj).mean) << " | " << mean_pm_std(f) << " | " << f.n
       << " | " << fmt("%.3f", stats_of(c.best).mean) << " | " << mode_s << " | " << human_bytes(stats_of(c.up).mean)
       << " | " << human_bytes(stats_of(c.down).mean) << " | " << fmt("%.1f", stats_of(c.sec).mean) << " |\n";
    csv << csv_field(g.label) << "," << g.method << "," << k << "," << csv_field(name) << ","
        << csv_num("%.0f", first.rank[k]) << "," << (grp_s == "-" ? "" : grp_s) << ","
        << csv_num("%.6f", stats_of(c.maj).mean) << "," << csv_num("%.6f", f.mean) << "," << csv_num("%.6f", f.std)
        << "," << f.n << "," << csv_num("%.6f", stats_of(c.gen).mean) << "," << csv_num("%.6f", stats_of(c.best).mean)
        << "," << (mode >= 0 ? std::to_string(mode) : "") << "," << csv_num("%.3f", stats_of(c.best_r).mean) << ","
        << csv_num("%.3f", stats_of(c.in).mean) << "," << csv_num("%.0f", stats_of(c.up).mean) << ","
        << csv_num("%.0f", stats_of(c.down).mean) << "," << csv_num("%.3f", stats_of(c.sec).mean) << "," << seeds
        << "\n";
}

// The per-client markdown table (begins `md`) and the per-client CSV.
void per_client_tables(const std::vector<Group>& groups, std::ostringstream& md, std::ostringstream& csv) {
    md << "## Per client\n\nMean over seeds; ± is the sample standard deviation over seeds (n - 1), shown when "
          "n > 1. Final accuracy: label-likelihood accuracy in the last round the client was evaluated in; "
          "best round is 0-based (mode over seeds); bytes are totals over the run; seconds are the client's "
          "training + evaluation time. grp: the LoRA aggregation group (- = trains alone or not a LoRA "
          "baseline).\n\n";
    md << "| scenario | method | client | rank | grp | majority | final acc | n | best acc | best round | bytes up | "
          "bytes down | seconds |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n";
    csv << "scenario,method,client,name,rank,group,majority,final_accuracy_mean,final_accuracy_std,n_seeds,"
           "final_accuracy_generate_mean,best_accuracy_mean,best_round_mode,best_round_mean,rounds_evaluated_mean,"
           "bytes_up_mean,bytes_down_mean,seconds_mean,seeds\n";
    for (const auto& g : groups) {
        const std::string seeds = seed_list(g);
        const size_t K = static_cast<size_t>(g.runs.front()->clients);
        for (size_t k = 0; k < K; ++k) write_client_row(g, k, seeds, md, csv);
    }
}

// Per run of a group: the mean over clients (all clients together for bytes), and the rounds it ran.
struct GroupOverSeeds {
    std::vector<double> mean_fin, mean_best, mean_maj, tot_up, tot_down, wall;
    std::string rounds;  // "N", or "MIN-MAX" where the runs differ
};

GroupOverSeeds group_over_seeds(const Group& g) {
    GroupOverSeeds o;
    const size_t K = static_cast<size_t>(g.runs.front()->clients);  // the same in every run of a group
    int64_t rounds_min = g.runs.front()->rounds, rounds_max = g.runs.front()->rounds;
    for (const auto* r : g.runs) {
        o.mean_fin.push_back(stats_of(r->final_acc).mean);
        std::vector<double> b;
        for (double x : r->best_acc) b.push_back(x >= 0 ? x : kNaN);
        o.mean_best.push_back(stats_of(b).mean);
        o.mean_maj.push_back(stats_of(r->majority).mean);
        double u = 0, d = 0;
        for (size_t k = 0; k < K; ++k) {
            u += r->bytes_up[k];
            d += r->bytes_down[k];
        }
        o.tot_up.push_back(u);
        o.tot_down.push_back(d);
        o.wall.push_back(r->wall_seconds);
        rounds_min = std::min(rounds_min, r->rounds);
        rounds_max = std::max(rounds_max, r->rounds);
    }
    o.rounds = std::to_string(rounds_min);
    if (rounds_max != rounds_min) o.rounds += "-" + std::to_string(rounds_max);
    return o;
}

// The per (scenario, method) markdown table, returned, and its CSV, written to `summary_csv`.
std::string summary_tables(const std::vector<Group>& groups, std::ostringstream& summary_csv) {
    summary_csv << "scenario,method,clients,n_seeds,seeds,rounds,mean_final_accuracy,mean_final_accuracy_std,"
                   "mean_best_accuracy,mean_majority,bytes_up_total_mean,bytes_down_total_mean,wall_seconds_mean\n";
    std::ostringstream md;
    md << "## Per scenario and method\n\nfinal acc: the mean over clients of each run's final accuracy, "
          "then mean ± sample standard deviation of that mean over seeds; bytes: all clients together, "
          "mean over seeds; wall s: sum of the rounds' wall time (/rounds/round_seconds), mean over "
          "seeds.\n\n";
    md << "| scenario | method | clients | n | rounds | final acc | best acc | majority | bytes up | bytes down | "
          "wall s |\n|---|---|---|---|---|---|---|---|---|---|---|\n";
    for (const auto& g : groups) {
        const size_t K = static_cast<size_t>(g.runs.front()->clients);
        const GroupOverSeeds o = group_over_seeds(g);
        const Stats mf = stats_of(o.mean_fin);
        md << "| " << g.label << " | " << g.method << " | " << K << " | " << g.runs.size() << " | " << o.rounds
           << " | " << mean_pm_std(mf) << " | " << fmt("%.3f", stats_of(o.mean_best).mean) << " | "
           << fmt("%.3f", stats_of(o.mean_maj).mean) << " | " << human_bytes(stats_of(o.tot_up).mean) << " | "
           << human_bytes(stats_of(o.tot_down).mean) << " | " << fmt("%.1f", stats_of(o.wall).mean) << " |\n";
        summary_csv << csv_field(g.label) << "," << g.method << "," << K << "," << g.runs.size() << "," << seed_list(g)
                    << "," << o.rounds << "," << csv_num("%.6f", mf.mean) << "," << csv_num("%.6f", mf.std) << ","
                    << csv_num("%.6f", stats_of(o.mean_best).mean) << "," << csv_num("%.6f", stats_of(o.mean_maj).mean)
                    << "," << csv_num("%.0f", stats_of(o.tot_up).mean) << ","
                    << csv_num("%.0f", stats_of(o.tot_down).mean) << "," << csv_num("%.3f", stats_of(o.wall).mean)
                    << "\n";
    }
    return md.str();
}

// One row per run, with the path of its metrics.
std::string runs_table(const std::vector<Group>& groups) {
    std::ostringstream md;
    md << "## Runs\n\n| scenario | method | seed | rounds | wall s | metrics |\n|---|---|---|---|---|---|\n";
    for (const auto& g : groups)
        for (const auto* r : g.runs)
            md << "| " << g.label << " | " << g.method << " | " << r->seed << " | " << r->rounds << " | "
               << fmt("%.1f", r->wall_seconds) << " | " << r->path << " |\n";
    return md.str();
}

// ---------------------------------------------------------------- paired comparisons

using MethodPair = std::pair<std::string, std::string>;

// The pairs to compare in one (scenario, variant): the requested ones present, or by default
// h2tune against every other method there.
std::vector<std::pair<const Group*, const Group*>> pairs_in(const std::vector<const Group*>& cell,
                                                            const std::vector<MethodPair>& requested) {
    auto find = [&](const std::string& method) -> const Group* {
        for (const Group* g : cell)
            if (g->method == method) return g;
        return nullptr;
    };
    std::vector<std::pair<const Group*, const Group*>> out;
    if (!requested.empty()) {
        for (const auto& [a, b] : requested)
            if (find(a) && find(b)) out.emplace_back(find(a), find(b));
        return out;
    }
    if (const Group* h = find("h2tune"))
        for (const Group* g : cell)
            if (g != h) out.emplace_back(h, g);
    return out;
}

// Final accuracy per seed the two groups share: client k's (k >= 0) or the run's client mean (-1).
void shared_seed_values(const Group& a, const Group& b, int64_t k, std::vector<double>& va, std::vector<double>& vb) {
    auto value = [k](const RunSummary& r) {
        if (k >= 0) return r.final_acc[static_cast<size_t>(k)];
        return stats_of(r.final_acc).mean;
    };
    for (const RunSummary* ra : a.runs)
        for (const RunSummary* rb : b.runs)
            if (ra->seed == rb->seed) {
                va.push_back(value(*ra));
                vb.push_back(value(*rb));
                break;
            }
}

std::string paired_row(const std::string& scenario, const Group& a, const Group& b, const std::string& client,
                       const PairedDifference& d) {
    return "| " + scenario + " | " + a.method + " - " + b.method + " | " + client + " | " + std::to_string(d.n) + " | " +
           fmt("%+.3f", d.mean) + " | [" + fmt("%+.3f", d.low) + ", " + fmt("%+.3f", d.high) + "] | " +
           fmt("%+.1f %%", 100 * d.relative) + " |\n";
}

// Method A minus method B in final accuracy, paired over the seeds both ran, per client and for
// the run's client mean, with the 95 % Student-t interval of the paired differences.
std::string paired_tables(const std::vector<Group>& groups, const std::vector<MethodPair>& requested, Notes& notes) {
    std::map<std::pair<size_t, size_t>, std::vector<const Group*>> cells;  // (scenario order, variant)
    for (const auto& g : groups) cells[{g.scenario_order, g.variant}].push_back(&g);
    std::ostringstream out;
    for (const auto& [key, cell] : cells) {
        for (const auto& [a, b] : pairs_in(cell, requested)) {
            std::vector<double> va, vb;
            shared_seed_values(*a, *b, -1, va, vb);
            if (va.size() < 2) {
                notes.push_back(a->label + ": " + a->method + " and " + b->method + " share " +
                                std::to_string(va.size()) + " seed(s); a paired interval needs at least 2");
                continue;
            }
            out << paired_row(a->label, *a, *b, "mean of clients", paired_difference(va, vb));
            for (int64_t k = 0; k < a->runs.front()->clients; ++k) {
                va.clear();
                vb.clear();
                shared_seed_values(*a, *b, k, va, vb);
                const std::string& name = a->runs.front()->names[static_cast<size_t>(k)];
                out << paired_row(a->label, *a, *b, std::to_string(k) + " " + name, paired_difference(va, vb));
            }
        }
    }
    if (out.str().empty()) return "";
    return "## Paired comparisons (final accuracy, A - B over the seeds both ran; 95 % Student-t interval of the "
           "paired differences; relative = mean A / mean B - 1)\n\n| scenario | A - B | client | seeds | mean "
           "difference | 95 % interval | relative |\n|---|---|---|---|---|---|---|\n" +
           out.str();
}

// What each H2Tune client's final accuracy owes the shared channel (federation.eval_probes): the
// accuracy with every T replaced by the round's residual D (the bank's mixture removed) and by
// zero, as means over seeds; empty when no run measured them.
std::string probe_table(const std::vector<Group>& groups) {
    std::ostringstream out;
    for (const auto& g : groups) {
        const size_t K = static_cast<size_t>(g.runs.front()->clients);
        for (size_t k = 0; k < K; ++k) {
            std::vector<double> fin, no_dl, no_t;
            for (const auto* r : g.runs) {
                if (!std::isfinite(r->final_no_download[k]) || !std::isfinite(r->final_no_middle[k])) continue;
                fin.push_back(r->final_acc[k]);
                no_dl.push_back(r->final_no_download[k]);
                no_t.push_back(r->final_no_middle[k]);
            }
            if (fin.empty()) continue;
            const double f = stats_of(fin).mean, d = stats_of(no_dl).mean, t = stats_of(no_t).mean;
            out << "| " << g.label << " | " << g.method << " | " << k << " " << g.runs.front()->names[k] << " | "
                << fin.size() << " | " << fmt("%.3f", f) << " | " << fmt("%.3f", d) << " | " << fmt("%+.3f", d - f)
                << " | " << fmt("%.3f", t) << " | " << fmt("%+.3f", t - f) << " |\n";
        }
    }
    if (out.str().empty()) return "";
    return "## Shared-channel probes (federation.eval_probes; final round, mean over seeds)\n\nThe client's test "
           "accuracy with its trained middle matrices T, with T replaced by the round's residual D (the "
           "downloaded mixture sum_j Pi G removed), and with T = 0 (plain LoRA B A).\n\n| scenario | method | client "
           "| seeds | final acc | without download | change | without T | change |\n|---|---|---|---|---|---|---|---|---|\n" +
           out.str();
}

void grouped_tables(const std::vector<std::string>& paths, const std::vector<MethodPair>& compare, std::ostringstream& md,
                    std::ostringstream& csv, std::ostringstream& summary_csv) {
    Notes notes;
    const std::vector<RunSummary> runs = load_complete_runs(paths, notes);
    const Variants variants = find_variants(runs);
    const VariantLabels labels = label_variants(variants, notes);
    std::vector<Group> groups = form_groups(runs, variants, labels);  // points into `runs`
    sort_by_seed(groups, notes);

    std::ostringstream body;
    per_client_tables(groups, body, csv);
    body << "\n" << summary_tables(groups, summary_csv) << "\n" << runs_table(groups);
    const std::string paired = paired_tables(groups, compare, notes);
    if (!paired.empty()) body << "\n" << paired;
    const std::string probes = probe_table(groups);
    if (!probes.empty()) body << "\n" << probes;
    std::vector<const RunSummary*> all;
    for (const auto& r : runs) all.push_back(&r);
    body << "\n" << provenance_table(all, notes);
    if (!notes.empty()) {
        body << "\nNotes:\n\n";
        for (const auto& n : notes) body << "* " << n << "\n";
        print_notes(notes);
    }
    md << "# h2tune report: " << runs.size() << " runs, " << groups.size() << " groups (scenario, method)\n\n"
       << body.str();
}

void write_file(const po::variables_map& vm, const char* option, const std::string& text) {
    if (!vm.count(option)) return;
    const auto& path = vm[option].as<std::string>();
    std::ofstream out(path);
    if (!(out << text)) throw IoError("cannot write " + path);
}

}  // namespace

int cmd_report(const Args& args) {
    po::options_description desc("report options");
    std::vector<std::string> runs;
    desc.add_options()
        ("runs", po::value<std::vector<std::string>>(&runs)->required(),
         "run directories or metrics.h5 files; a directory that is not a run is searched for runs")
        ("markdown", po::value<std::string>(), "also write the markdown tables to this file")
        ("csv", po::value<std::string>(), "also write a CSV table (one row per client) to this file")
        ("summary-csv", po::value<std::string>(), "several runs: also write the per (scenario, method) CSV to this file")
        ("grouped", po::bool_switch(), "group seeds (the several-runs tables) even for a single run")
        ("per-run", po::bool_switch(), "several runs: one row per client of each run (the one-run table) instead of "
                                       "grouping seeds")
        ("compare", po::value<std::vector<std::string>>(),
         "A,B: paired comparison of method A against B over their shared seeds (repeatable; default: h2tune "
         "against every other method of a scenario)");
    po::variables_map vm;
    if (!parse_command_options("report", "RUN_DIR... [--markdown FILE] [--csv FILE] [--summary-csv FILE] [--grouped | --per-run] [--compare A,B]",
                               desc, args, vm, "runs"))
        return kExitOk;

    std::vector<std::string> expanded;
    for (const auto& r : runs) expand_run(r, expanded);
    std::ostringstream md, csv, summary_csv;
    const bool per_run = vm["per-run"].as<bool>();
    if (per_run && vm["grouped"].as<bool>()) throw ConfigError("report: --grouped and --per-run exclude each other");
    const bool grouped = !per_run && (expanded.size() > 1 || vm["grouped"].as<bool>());
    std::vector<MethodPair> compare;
    if (vm.count("compare"))
        for (const auto& c : vm["compare"].as<std::vector<std::string>>()) {
            const auto comma = c.find(',');
            if (comma == std::string::npos || comma == 0 || comma + 1 == c.size())
                throw ConfigError("report: --compare expects A,B (two method names), got '" + c + "'");
            compare.emplace_back(c.substr(0, comma), c.substr(comma + 1));
        }
    if (grouped) {
        grouped_tables(expanded, compare, md, csv, summary_csv);
    } else {
        if (vm.count("summary-csv"))
            throw ConfigError("report: --summary-csv needs the grouped tables (several runs or --grouped, not --per-run)");
        per_run_tables(expanded, md, csv);
    }
    std::fputs(md.str().c_str(), stdout);
    write_file(vm, "markdown", md.str());
    write_file(vm, "csv", csv.str());
    if (grouped) write_file(vm, "summary-csv", summary_csv.str());
    return kExitOk;
}

}  // namespace h2tune
