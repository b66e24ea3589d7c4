#include "h2tune/io/file_fingerprint.h"

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <map>
#include <sstream>
#include <vector>

#include "h2tune/core/error.h"
#include "h2tune/core/fnv1a.h"
#include "h2tune/core/input_file.h"

namespace fs = std::filesystem;

namespace h2tune {

namespace {

constexpr uint64_t kWholeFileBytes = 64ull << 20;
constexpr uint64_t kEdgeBytes = 1ull << 20;
constexpr uint64_t kBlockBytes = 64ull << 10;
constexpr int kBlocks = 32;

// Hashes [offset, offset + n) of the file (clipped to its size).
void hash_range(const InputFile& file, uint64_t offset, uint64_t n, Fnv1a64& hash) {
    std::vector<unsigned char> buffer(1 << 16);
    n = std::min(n, file.size() - std::min(offset, file.size()));
    while (n > 0) {
        const uint64_t piece = std::min<uint64_t>(n, buffer.size());
        file.read_at(offset, buffer.data(), piece);
        hash.add(buffer.data(), static_cast<size_t>(piece));
        offset += piece;
        n -= piece;
    }
}

std::map<std::string, std::string> parse_lines(const std::string& text) {
    std::map<std::string, std::string> out;
    std::istringstream in(text);
    std::string name, value;
    while (in >> name >> value) out[name] = value;
    return out;
}

}  // namespace

std::string file_fingerprint(const std::string& path) {
    const InputFile file(path, InputFileRule{"file", UINT64_MAX}, InputErrorKind::kIo);
    Fnv1a64 hash;
    if (file.size() <= kWholeFileBytes) {
        hash_range(file, 0, file.size(), hash);
    } else {
        hash_range(file, 0, kEdgeBytes, hash);
        hash_range(file, file.size() - kEdgeBytes, kEdgeBytes, hash);
        const uint64_t stride = (file.size() - kBlockBytes) / (kBlocks - 1);
        for (int i = 0; i < kBlocks; ++i) hash_range(file, static_cast<uint64_t>(i) * stride, kBlockBytes, hash);
    }
    char text[64];
    std::snprintf(text, sizeof text, "%llu:%016llx", static_cast<unsigned long long>(file.size()),
                  static_cast<unsigned long long>(hash.value));
    return text;
}

std::string model_fingerprint(const std::string& model_dir, const std::string& tokenizer_path) {
    std::vector<std::string> weights;
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator(model_dir, ec))
        if (entry.path().extension() == ".safetensors") weights.push_back(entry.path().filename().string());
    std::sort(weights.begin(), weights.end());
    std::string out;
    for (const auto& name : weights) out += name + " " + file_fingerprint((fs::path(model_dir) / name).string()) + "\n";
    out += "config.json " + file_fingerprint((fs::path(model_dir) / "config.json").string()) + "\n";
    out += "tokenizer " + file_fingerprint(tokenizer_path) + "\n";
    return out;
}

std::string fingerprint_difference(const std::string& recorded, const std::string& current) {
    const auto then = parse_lines(recorded), now = parse_lines(current);
    for (const auto& [name, value] : then) {
        const auto it = now.find(name);
        if (it == now.end()) return name + ": present when the checkpoint was written, missing now";
        if (it->second != value) return name + ": size:checksum " + value + " then, " + it->second + " now";
    }
    for (const auto& [name, value] : now)
        if (!then.count(name)) return name + ": absent when the checkpoint was written, present now";
    return "";
}

}  // namespace h2tune
