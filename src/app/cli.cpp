#include "h2tune/app/cli.h"

#include <cstring>
#include <iostream>

#include "h2tune/app/build_info.h"
#include "h2tune/comm/nccl_communicator.h"
#include "h2tune/app/cmd_export.h"
#include "h2tune/core/error.h"

namespace h2tune {

namespace {

void print_usage(std::ostream& os) {
    os << "usage: h2tune <command> [options]\n"
          "\n"
          "Hybrid heterogeneous federated fine-tuning of foundation models (H2Tune) under MPI.\n"
          "\n"
          "commands:\n"
          "  train      run a federated (or local) fine-tuning job from a job file\n"
          "  pretrain   pretrain a built-in foundation model on a text corpus\n"
          "  tokenizer  train a byte-level BPE tokenizer (tokenizer.json) on a corpus\n"
          "  eval       evaluate a model (plus an optional adapter) on a task or a text's perplexity\n"
          "  export     write a client's adapter as a PEFT adapter or a merged model directory\n"
          "  report     summarise metrics.h5 files as markdown and CSV tables\n"
          "\n"
          "'h2tune <command> --help' shows the options of a command; 'h2tune --version' the versions.\n";
}

void print_version() {
    std::cout << "h2tune " << h2tune_version() << " (git " << git_sha() << ")\n"
              << "LibTorch " << torch_version() << "\n"
              << "MPI " << mpi_version() << "\n"
              << "HDF5 " << hdf5_version() << "\n"
              << "NCCL for multi-GPU clients: " << (nccl_available() ? "yes" : "no (groups sum over MPI)") << "\n";
}

}  // namespace

int cli_main(int argc, char** argv) {
    if (argc < 2) {
        print_usage(std::cerr);
        return kExitUsage;
    }
    const std::string command = argv[1];
    if (command == "--version" || command == "version") {
        print_version();
        return kExitOk;
    }
    if (command == "--help" || command == "-h" || command == "help") {
        print_usage(std::cout);
        return kExitOk;
    }
    Args args(argv + 2, argv + argc);
    if (command == "train") return cmd_train(args);
    if (command == "pretrain") return cmd_pretrain(args);
    if (command == "tokenizer") return cmd_tokenizer(args);
    if (command == "eval") return cmd_eval(args);
    if (command == "export") return cmd_export(args);
    if (command == "report") return cmd_report(args);
    throw ConfigError("unknown command '" + command + "' (expected train, pretrain, tokenizer, eval, export or report; see h2tune --help)");
}

}  // namespace h2tune
