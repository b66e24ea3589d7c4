#include "h2tune/core/shape_text.h"

namespace h2tune {

std::string shape_string(const int64_t* dims, std::size_t count) {
    std::string out = "[";
    for (std::size_t i = 0; i < count; ++i) out += (i ? ", " : "") + std::to_string(dims[i]);
    return out + "]";
}

}  // namespace h2tune
