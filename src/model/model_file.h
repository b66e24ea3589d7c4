// File helpers private to the model component: whole-file reads with errors that name the file,
// and atomic writes (temp file in the same directory, fsync, rename, fsync of the directory) so a
// crash never leaves a half-written model.safetensors or config.json behind.
#pragma once

#include <cstddef>
#include <string>
#include <utility>
#include <vector>

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

// Reads a whole (small) file. Throws ModelError when it is missing or unreadable.
std::string read_text(const std::string& path);

bool exists(const std::string& path);

}  // namespace h2tune::model_file
