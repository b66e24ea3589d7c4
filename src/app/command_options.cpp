#include "h2tune/app/command_options.h"

#include <iostream>

#include "h2tune/core/error.h"

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

}  // namespace h2tune
