// Shared parsing for sub-command options (Boost.Program_options): --help, unknown options and bad
// values become ConfigErrors that name the option.
#pragma once

#include <boost/program_options.hpp>

#include <string>

#include "h2tune/app/cli.h"

namespace h2tune {

// Parses `args` against `desc` (a --help flag is added). Returns false after printing usage when
// --help was given. `positional` (optional) names an option that takes positional arguments.
bool parse_command_options(const std::string& command, const std::string& synopsis,
                           boost::program_options::options_description& desc, const Args& args,
                           boost::program_options::variables_map& vm, const char* positional = nullptr);

// Intra-op threads for LibTorch and the BLAS pool that LibTorch's setting does not reach
// (match_blas_threads); `threads` <= 0 means every core. Returns the count in effect.
int set_compute_threads(int threads);

}  // namespace h2tune
