// File helpers private to the model component: whole-file reads with errors that name the file,
// and atomic writes (temp file in the same directory, fsync, rename, fsync of the directory) so a
// crash never leaves a half-written model.safetensors or config.json behind.
#pragma once

#include <algorithm>
#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "h2tune/core/input_file.h"

namespace h2tune::model_file {

// A contiguous piece of the file being written.
struct Chunk {
    const void* data;
    std::size_t size;
};

// Writes the concatenation of `chunks` to `path` atomically. Throws IoError.
void write_atomic(const std::string& path, const std::vector<Chunk>& chunks);
inline void write_atomic(const std::string& path, const std::string& text) {
    write_atomic(path, {Chunk{text.data(), text.size()}});
}

// Reads a whole small file (a regular file of at most 64 MiB). Throws ModelError when it is
// missing, unreadable, not a regular file or larger.
std::string read_text(const std::string& path);

bool exists(const std::string& path);


// Real config.json and safetensors headers nest 3 levels deep.
constexpr int kMaxJsonDepth = 32;

}  // namespace h2tune::model_file
