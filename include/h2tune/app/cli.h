// The `h2tune` command line: sub-commands, each with its own options and --help.
#pragma once

#include <string>
#include <vector>

namespace h2tune {

// Exit codes (documented in README.md).
constexpr int kExitOk = 0;
constexpr int kExitFailure = 1;     // runtime failure (I/O, MPI, model)
constexpr int kExitUsage = 2;       // bad command line, job file or data
constexpr int kExitPreempted = 3;   // stopped by a signal after writing a checkpoint

// Dispatches `h2tune <subcommand> ...`. Throws h2tune::Error for failures; `main` reports them.
int cli_main(int argc, char** argv);

using Args = std::vector<std::string>;
int cmd_train(const Args& args);
int cmd_pretrain(const Args& args);
int cmd_tokenizer(const Args& args);
int cmd_eval(const Args& args);
int cmd_report(const Args& args);

}  // namespace h2tune
