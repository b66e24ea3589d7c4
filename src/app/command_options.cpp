#include "h2tune/app/command_options.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <iostream>
#include <thread>

#include "h2tune/core/error.h"
#include "h2tune/core/process_setup.h"

namespace po = boost::program_options;

namespace h2tune {

bool parse_command_options(const std::string& command, const std::string& synopsis, po::options_description& desc,
                           const Args& args, po::variables_map& vm, const char* positional) {
    desc.add_options()("help,h", "show this help and exit");
    try {
        po::command_line_parser parser(args);
        parser.options(desc);
        po::positional_options_description pos;
        if (positional) {
            pos.add(positional, -1);
            parser.positional(pos);
        }
        po::store(parser.run(), vm);
        if (vm.count("help")) {
            std::cout << "usage: h2tune " << command << " " << synopsis << "\n\n" << desc << "\n";
            return false;
        }
        po::notify(vm);
    } catch (const po::error& e) {
        throw ConfigError("h2tune " + command + ": " + e.what() + " (see 'h2tune " + command + " --help')");
    }
    return true;
}

int set_compute_threads(int threads) {
    at::set_num_threads(threads > 0 ? threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
    const int in_effect = at::get_num_threads();
    match_blas_threads(in_effect);
    return in_effect;
}

}  // namespace h2tune
