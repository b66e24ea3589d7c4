#pragma once
// Tensor shapes as text for error messages, e.g. "[4, 128, 32]".
// Takes any contiguous range of int64 dimensions (torch::IntArrayRef, std::vector<int64_t>) so this
// header stays free of LibTorch and cheap to include.
#include <cstddef>
#include <cstdint>
#include <string>

namespace h2tune {

std::string shape_string(const int64_t* dims, std::size_t count);

template <class Dims>
std::string shape_string(const Dims& dims) {
    return shape_string(dims.data(), dims.size());
}

}  // namespace h2tune
