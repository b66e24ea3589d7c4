// Small helpers shared by the benchmark programs (not part of the library).
#pragma once

#include <dlfcn.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "h2tune/core/error.h"

namespace h2tune::bench {

inline double median(std::vector<double> v) {
    if (v.empty()) return std::numeric_limits<double>::quiet_NaN();
    std::sort(v.begin(), v.end());
    const size_t n = v.size();
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// Debian's LibTorch calls the system BLAS (OpenBLAS, pthreads build) for fp32 matmuls; OpenBLAS
// keeps its own thread pool, which torch::set_num_threads does NOT resize (it starts with one
// thread per core, or OPENBLAS_NUM_THREADS). -1 when the BLAS is not OpenBLAS.
inline int blas_threads() {
    using Get = int (*)();
    const auto get = reinterpret_cast<Get>(dlsym(RTLD_DEFAULT, "openblas_get_num_threads"));
    return get ? get() : -1;
}

// Writes a benchmark's JSON result, creating the folder it goes in.
inline void write_json(const std::string& path, const nlohmann::json& out) {
    const std::filesystem::path p(path);
    if (p.has_parent_path()) std::filesystem::create_directories(p.parent_path());
    std::ofstream f(path);
    if (!f) throw h2tune::IoError(path + ": cannot write");
    f << out.dump(2) << "\n";
}

}  // namespace h2tune::bench
