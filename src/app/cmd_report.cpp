// `h2tune report`: reads metrics.h5 files and prints (and optionally writes) per-client tables.
#include <cstdio>
#include <fstream>
#include <sstream>

#include "h2tune/app/cli.h"
#include "h2tune/app/command_options.h"
#include "h2tune/core/error.h"
#include "h2tune/io/hdf5_file.h"

namespace po = boost::program_options;

namespace h2tune {

namespace {

struct RunSummary {
    std::string path, method;
    int64_t clients = 0, rounds = 0;
    std::vector<std::string> names;
    std::vector<double> majority, final_acc, final_gen, best_acc, bytes_up, bytes_down, seconds;
    std::vector<int64_t> best_round;
};

RunSummary summarise(const std::string& dir_or_file) {
    std::string path = dir_or_file;
    if (path.size() < 3 || path.substr(path.size() - 3) != ".h5") path += "/metrics.h5";
    Hdf5File f(path, Hdf5File::Mode::ReadOnly);
    RunSummary s;
    s.path = path;
    s.method = f.string_attribute("/", "method");
    s.clients = f.int_attribute("/", "num_clients");
    auto shape = f.dataset_shape("/metrics/test_accuracy");
    s.rounds = shape.at(0);
    if (s.rounds == 0) throw DataError(path + ": no completed rounds");
    auto acc = f.read_doubles("/metrics/test_accuracy");
    auto gen = f.read_doubles("/metrics/test_accuracy_generate");
    auto up = f.read_doubles("/metrics/bytes_up");
    auto down = f.read_doubles("/metrics/bytes_down");
    auto train_s = f.read_doubles("/metrics/train_seconds");
    auto eval_s = f.read_doubles("/metrics/eval_seconds");
    s.majority = f.read_doubles("/clients/majority_rate");
    const int64_t K = s.clients;
    for (int64_t k = 0; k < K; ++k) {
        s.names.push_back(f.string_attribute("/clients", "name_" + std::to_string(k)));
        double best = -1, tu = 0, td = 0, sec = 0;
        int64_t best_r = 0;
        for (int64_t r = 0; r < s.rounds; ++r) {
            const size_t i = static_cast<size_t>(r * K + k);
            if (acc[i] > best) {
                best = acc[i];
                best_r = r;
            }
            tu += up[i];
            td += down[i];
            sec += train_s[i] + eval_s[i];
        }
        const size_t last = static_cast<size_t>((s.rounds - 1) * K + k);
        s.final_acc.push_back(acc[last]);
        s.final_gen.push_back(gen[last]);
        s.best_acc.push_back(best);
        s.best_round.push_back(best_r);
        s.bytes_up.push_back(tu);
        s.bytes_down.push_back(td);
        s.seconds.push_back(sec);
    }
    return s;
}

}  // namespace

int cmd_report(const Args& args) {
    po::options_description desc("report options");
    std::vector<std::string> runs;
    desc.add_options()
        ("runs", po::value<std::vector<std::string>>(&runs)->required(), "run directories or metrics.h5 files")
        ("markdown", po::value<std::string>(), "also write the markdown table to this file")
        ("csv", po::value<std::string>(), "also write a CSV table to this file");
    po::variables_map vm;
    if (!parse_command_options("report", "RUN_DIR... [--markdown FILE] [--csv FILE]", desc, args, vm, "runs")) return kExitOk;

    std::ostringstream md, csv;
    md << "| run | method | client | majority | final acc (score) | final acc (generate) | best acc | best round | "
          "bytes up | bytes down | seconds |\n|---|---|---|---|---|---|---|---|---|---|---|\n";
    csv << "run,method,client,name,majority,final_accuracy,final_accuracy_generate,best_accuracy,best_round,bytes_up,"
           "bytes_down,seconds\n";
    for (const auto& run : runs) {
        RunSummary s = summarise(run);
        for (int64_t k = 0; k < s.clients; ++k) {
            const size_t i = static_cast<size_t>(k);
            char line[512];
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
    std::fputs(md.str().c_str(), stdout);
    if (vm.count("markdown")) {
        std::ofstream out(vm["markdown"].as<std::string>());
        if (!(out << md.str())) throw IoError("cannot write " + vm["markdown"].as<std::string>());
    }
    if (vm.count("csv")) {
        std::ofstream out(vm["csv"].as<std::string>());
        if (!(out << csv.str())) throw IoError("cannot write " + vm["csv"].as<std::string>());
    }
    return kExitOk;
}

}  // namespace h2tune
