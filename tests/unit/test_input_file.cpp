// Reading hostile input files: regular files only, bounded, errors that name the file and role.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>

#include "h2tune/core/error.h"
#include "h2tune/core/input_file.h"

namespace fs = std::filesystem;
using namespace h2tune;

namespace {

fs::path scratch(const std::string& name) {
    const fs::path dir = fs::temp_directory_path() / ("h2tune_input_file_" + std::to_string(::getpid()));
    fs::create_directories(dir);
    return dir / name;
}

void write(const fs::path& path, const std::string& text) {
    std::ofstream(path, std::ios::binary) << text;
}

std::string message_of(const std::function<void()>& f) {
    try {
        f();
    } catch (const Error& e) {
        return e.what();
    }
    return "(no error)";
}

const InputFileRule kRule{"training file", 64};

}  // namespace

TEST(InputFile, ReadsARegularFileWhole) {
    const fs::path p = scratch("ok.jsonl");
    write(p, std::string("line one\nline two\n"));
    EXPECT_EQ(read_input_file(p.string(), kRule, InputErrorKind::kData), "line one\nline two\n");
    EXPECT_EQ(check_input_file(p.string(), kRule, InputErrorKind::kData), 18u);
}

TEST(InputFile, RefusesAFifoWithoutBlocking) {
    const fs::path p = scratch("fifo.jsonl");
    fs::remove(p);
    ASSERT_EQ(::mkfifo(p.c_str(), 0600), 0);
    EXPECT_THROW(read_input_file(p.string(), kRule, InputErrorKind::kData), DataError);
    EXPECT_EQ(message_of([&] { read_input_file(p.string(), kRule, InputErrorKind::kData); }),
              p.string() + ": not a regular file (a FIFO, socket or device); give the training file itself");
}

TEST(InputFile, RefusesDevicesAndDirectories) {
    EXPECT_THROW(read_input_file("/dev/zero", kRule, InputErrorKind::kConfig), ConfigError);
    const fs::path dir = scratch("");
    EXPECT_EQ(message_of([&] { read_input_file(dir.string(), kRule, InputErrorKind::kModel); }),
              dir.string() + ": is a directory, not a training file");
    EXPECT_THROW(read_input_file(dir.string(), kRule, InputErrorKind::kModel), ModelError);
}

TEST(InputFile, RefusesAFileAboveTheLimitBeforeReading) {
    const fs::path p = scratch("big.jsonl");
    write(p, std::string(65, 'x'));
    EXPECT_EQ(message_of([&] { read_input_file(p.string(), kRule, InputErrorKind::kData); }),
              p.string() + ": 65 bytes; a training file may have at most 64 bytes");
    write(p, std::string(64, 'x'));
    EXPECT_EQ(read_input_file(p.string(), kRule, InputErrorKind::kData).size(), 64u);
}

TEST(InputFile, MissingFileNamesTheRoleAndReason) {
    const std::string m = message_of([] { read_input_file("/nonexistent/x.jsonl", kRule, InputErrorKind::kIo); });
    EXPECT_EQ(m, "/nonexistent/x.jsonl: cannot open training file: No such file or directory");
}

TEST(InputFile, ByteSizesReadAsPeopleWriteThem) {
    EXPECT_EQ(byte_size_text(17), "17 bytes");
    EXPECT_EQ(byte_size_text(4u << 20), "4 MiB");
    EXPECT_EQ(byte_size_text(3ull << 29), "1.5 GiB");
    EXPECT_GE(memory_fraction_bytes(0.25), 1u << 20);
}

TEST(InputFile, ReadsAtOffsetsAndNamesAShortFile) {
    const fs::path p = scratch("pieces.bin");
    write(p, "0123456789");
    const InputFile file(p.string(), kRule, InputErrorKind::kModel);
    EXPECT_EQ(file.size(), 10u);
    char piece[4] = {};
    file.read_at(3, piece, 4);
    EXPECT_EQ(std::string(piece, 4), "3456");
    EXPECT_EQ(file.read_some(8, piece, 4), 2u);
    EXPECT_EQ(file.read_some(10, piece, 4), 0u);
    EXPECT_EQ(message_of([&] { file.read_at(8, piece, 4); }),
              p.string() + ": unexpected end of file (truncated while reading?)");
    EXPECT_THROW(file.read_at(8, piece, 4), ModelError);
}

TEST(InputFile, JsonNestingDepthSkipsStrings) {
    EXPECT_EQ(json_nesting_depth("{\"a\": [1, {\"b\": []}]}"), 4);
    EXPECT_EQ(json_nesting_depth("{\"a\": \"[[[[\\\"{{\"}"), 1);
    EXPECT_EQ(json_nesting_depth(std::string(1000, '[')), 1000);
}
