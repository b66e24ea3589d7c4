// Fingerprints of a base model's files: equal for equal files, different when a file changes,
// sampled (not read whole) for large ones.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "h2tune/core/error.h"
#include "h2tune/io/file_fingerprint.h"

namespace fs = std::filesystem;
using namespace h2tune;

namespace {

fs::path scratch_dir() {
    const fs::path dir = fs::temp_directory_path() / ("h2tune_fingerprint_" + std::to_string(::getpid()));
    fs::create_directories(dir);
    return dir;
}

void write(const fs::path& path, const std::string& text) { std::ofstream(path, std::ios::binary) << text; }

}  // namespace

TEST(FileFingerprint, SizeAndChecksumOfTheBytes) {
    const fs::path a = scratch_dir() / "a.bin", b = scratch_dir() / "b.bin";
    write(a, "weights");
    write(b, "weights");
    EXPECT_EQ(file_fingerprint(a.string()), file_fingerprint(b.string()));
    EXPECT_EQ(file_fingerprint(a.string()).substr(0, 2), "7:");
    write(b, "weightz");
    EXPECT_NE(file_fingerprint(a.string()), file_fingerprint(b.string()));
}

TEST(FileFingerprint, LargeFilesAreSampledAtTheirEdgesAndInBlocks) {
    const fs::path p = scratch_dir() / "large.bin";
    std::string bytes(80u << 20, '\0');
    write(p, bytes);
    const std::string before = file_fingerprint(p.string());
    bytes[bytes.size() - 1] = 1;  // inside the last MiB: sampled
    write(p, bytes);
    EXPECT_NE(file_fingerprint(p.string()), before);
    EXPECT_EQ(file_fingerprint(p.string()).substr(0, 9), "83886080:");
}

TEST(FileFingerprint, ModelFingerprintNamesTheFileThatChanged) {
    const fs::path dir = scratch_dir() / "model";
    fs::create_directories(dir);
    write(dir / "config.json", "{}");
    write(dir / "model.safetensors", "tensors");
    write(dir / "tokenizer.json", "{\"model\": {}}");
    const std::string tokenizer = (dir / "tokenizer.json").string();
    const std::string then = model_fingerprint(dir.string(), tokenizer);
    EXPECT_EQ(fingerprint_difference(then, model_fingerprint(dir.string(), tokenizer)), "");
    write(dir / "model.safetensors", "tensorz");
    const std::string difference = fingerprint_difference(then, model_fingerprint(dir.string(), tokenizer));
    EXPECT_EQ(difference.rfind("model.safetensors: size:checksum 7:", 0), 0u) << difference;
    write(dir / "model.safetensors", "tensors");
    write(dir / "model-00002-of-00002.safetensors", "more");
    EXPECT_EQ(fingerprint_difference(then, model_fingerprint(dir.string(), tokenizer)),
              "model-00002-of-00002.safetensors: absent when the checkpoint was written, present now");
}

TEST(FileFingerprint, UnreadableFileIsAnIoError) {
    EXPECT_THROW(file_fingerprint("/nonexistent/model.safetensors"), IoError);
}
