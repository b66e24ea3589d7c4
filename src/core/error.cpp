#include "h2tune/core/error.h"

namespace h2tune {

std::string error_at(const std::string& file, long line, const std::string& message) {
    std::string out = file;
    if (line > 0) out += ":" + std::to_string(line);
    out += ": " + message;
    return out;
}

}  // namespace h2tune
