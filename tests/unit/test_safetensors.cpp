// safetensors reader/writer: round trips for every supported dtype, the writer's layout promises
// (sorted, aligned, deterministic, atomic) and rejection of malformed files with useful messages.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "h2tune/core/error.h"
#include "h2tune/model/safetensors.h"

namespace fs = std::filesystem;
using namespace h2tune;

namespace {

class Safetensors : public ::testing::Test {
protected:
    void SetUp() override {
        const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
        dir_ = fs::temp_directory_path() /
               ("h2tune_st_" + std::to_string(::getpid()) + "_" + std::string(info->name()));
        fs::remove_all(dir_);
        fs::create_directories(dir_);
    }
    void TearDown() override { fs::remove_all(dir_); }

    std::string path(const std::string& name) const { return (dir_ / name).string(); }

    static std::string read_bytes(const std::string& p) {
        std::ifstream in(p, std::ios::binary);
        return std::string(std::istreambuf_iterator<char>(in), {});
    }
    static void write_bytes(const std::string& p, const std::string& bytes) {
        std::ofstream out(p, std::ios::binary);
        out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    }
    // A raw file: 8-byte length (header.size() unless overridden), header, data.
    std::string raw(const std::string& name, const std::string& header, const std::string& data,
                    int64_t length = -1) {
        const uint64_t n = length < 0 ? header.size() : static_cast<uint64_t>(length);
        std::string bytes;
        for (int i = 0; i < 8; ++i) bytes.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
        bytes += header + data;
        const std::string p = path(name);
        write_bytes(p, bytes);
        return p;
    }

    fs::path dir_;
};

// Runs `f`, expecting a ModelError whose message contains every one of `parts`.
void expect_model_error(const std::function<void()>& f, const std::vector<std::string>& parts) {
    try {
        f();
        FAIL() << "expected ModelError";
    } catch (const ModelError& e) {
        const std::string msg = e.what();
        for (const auto& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "'" << p << "' not in: " << msg;
    }
}

}  // namespace

TEST_F(Safetensors, RoundTripEveryDtypeAndMetadata) {
    torch::manual_seed(1);
    std::map<std::string, torch::Tensor> in;
    in["f64"] = torch::randn({3, 2}, torch::kFloat64);
    in["f32"] = torch::randn({4, 5});
    in["f16"] = torch::randn({7}).to(torch::kFloat16);
    in["bf16"] = torch::randn({2, 3, 2}).to(torch::kBFloat16);
    in["i64"] = torch::arange(-5, 5, torch::kInt64).view({2, 5});
    in["i32"] = torch::tensor({-7, 0, 2147483647}, torch::kInt32);
    in["i16"] = torch::tensor({-300, 300}, torch::kInt16);
    in["i8"] = torch::tensor({-128, 127, 3}, torch::kInt8);
    in["u8"] = torch::tensor({0, 255, 17}, torch::kUInt8);
    in["bool"] = torch::tensor({true, false, true});
    in["scalar"] = torch::tensor(3.5f);
    in["empty"] = torch::zeros({0, 3});
    in["strided"] = torch::randn({4, 6}).t();  // non-contiguous input
    const std::map<std::string, std::string> meta{{"format", "pt"}, {"note", "h2tune \"test\""}};
    const std::string p = path("all.safetensors");
    safetensors_save(p, in, meta);

    std::map<std::string, std::string> meta_out;
    const auto out = safetensors_load(p, &meta_out);
    EXPECT_EQ(meta_out, meta);
    ASSERT_EQ(out.size(), in.size());
    for (const auto& [name, t] : in) {
        ASSERT_TRUE(out.count(name)) << name;
        const torch::Tensor& u = out.at(name);
        EXPECT_EQ(u.scalar_type(), t.scalar_type()) << name;
        EXPECT_EQ(u.sizes(), t.sizes()) << name;
        EXPECT_TRUE(u.is_contiguous()) << name;
        EXPECT_TRUE(torch::equal(u, t)) << name;
    }

    const auto header = safetensors_read_header(p);
    EXPECT_EQ(header.at("bf16").dtype, "BF16");
    EXPECT_EQ(header.at("bf16").shape, (std::vector<int64_t>{2, 3, 2}));
    EXPECT_EQ(header.at("bool").torch_dtype, torch::kBool);
    EXPECT_EQ(header.at("scalar").shape, std::vector<int64_t>{});
}

TEST_F(Safetensors, WriterIsDeterministicAlignedAndLeavesNoTempFiles) {
    std::map<std::string, torch::Tensor> in{{"b", torch::ones({3}, torch::kUInt8)},
                                            {"a", torch::arange(5, torch::kFloat32)},
                                            {"c", torch::arange(3, torch::kInt64)},
                                            {"d", torch::ones({1}, torch::kFloat16)}};
    const std::string p1 = path("one.safetensors"), p2 = path("two.safetensors");
    safetensors_save(p1, in);
    safetensors_save(p2, in);
    const std::string bytes = read_bytes(p1);
    EXPECT_EQ(bytes, read_bytes(p2));

    uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(bytes[static_cast<size_t>(i)]);
    EXPECT_EQ(n % 8, 0u);
    const std::string header = bytes.substr(8, n);
    EXPECT_EQ(header.front(), '{');
    EXPECT_LT(header.find("\"a\""), header.find("\"b\""));  // sorted names
    // Every tensor starts at a multiple of its element size.
    for (const auto& [name, e] : safetensors_read_header(p1)) {
        const int64_t elem = torch::elementSize(e.torch_dtype);
        EXPECT_EQ(e.begin % elem, 0) << name;
    }
    std::vector<std::string> files;
    for (const auto& entry : fs::directory_iterator(dir_)) files.push_back(entry.path().filename().string());
    std::sort(files.begin(), files.end());
    EXPECT_EQ(files, (std::vector<std::string>{"one.safetensors", "two.safetensors"}));

    // Overwriting replaces the file.
    safetensors_save(p1, {{"z", torch::zeros({2})}});
    EXPECT_EQ(safetensors_load(p1).count("z"), 1u);
}

TEST_F(Safetensors, WriterRejectsBadInput) {
    expect_model_error([&] { safetensors_save(path("x.safetensors"), {{"__metadata__", torch::zeros({1})}}); },
                       {"__metadata__", "reserved"});
    expect_model_error(
        [&] { safetensors_save(path("x.safetensors"), {{"c", torch::zeros({2}, torch::kComplexFloat)}}); },
        {"x.safetensors", "'c'"});
    EXPECT_THROW(safetensors_save(path("no/such/dir/x.safetensors"), {{"a", torch::zeros({1})}}), IoError);
}

TEST_F(Safetensors, RejectsMissingAndTruncatedFiles) {
    expect_model_error([&] { safetensors_load(path("missing.safetensors")); }, {"missing.safetensors", "cannot open"});

    const std::string tiny = path("tiny.safetensors");
    write_bytes(tiny, "abc");
    expect_model_error([&] { safetensors_load(tiny); }, {"tiny.safetensors", "shorter than the 8-byte"});

    // A valid file cut short inside the data section.
    const std::string p = path("cut.safetensors");
    safetensors_save(p, {{"w", torch::randn({16, 16})}});
    const std::string bytes = read_bytes(p);
    write_bytes(p, bytes.substr(0, bytes.size() - 100));
    expect_model_error([&] { safetensors_load(p); }, {"cut.safetensors", "'w'", "past the end"});
}

TEST_F(Safetensors, ParsesAHeaderFromBytesAndReadsOnlyRegularFiles) {
    const std::string p = path("two.safetensors");
    safetensors_save(p, {{"a", torch::ones({2, 3})}, {"b", torch::zeros({4}, torch::kInt8)}}, {{"format", "pt"}});
    const std::string bytes = read_bytes(p);
    const SafetensorsHeader h = safetensors_parse_header(bytes, "mem.safetensors", bytes.size());
    ASSERT_EQ(h.entries.size(), 2u);
    EXPECT_EQ(h.entries.at("a").shape, (std::vector<int64_t>{2, 3}));
    EXPECT_EQ(h.metadata.at("format"), "pt");
    EXPECT_EQ(h.data_start + 24 + 4, bytes.size());
    // Only the header is needed; the size says where the data section ends.
    EXPECT_EQ(safetensors_parse_header(bytes.substr(0, h.data_start), "mem", bytes.size()).entries.size(), 2u);
    expect_model_error([&] { safetensors_parse_header(bytes.substr(0, 20), "mem", bytes.size()); },
                       {"mem: header length", "runs past the 20 bytes given"});
    expect_model_error([&] { safetensors_parse_header(bytes, "mem", bytes.size() + 1); },
                       {"mem: data section holds 29 bytes but tensors cover 28"});
    expect_model_error([&] { safetensors_read_header("/dev/zero"); },
                       {"/dev/zero: not a regular file (a FIFO, socket or device); give the safetensors file itself"});
    expect_model_error([&] { safetensors_load(dir_.string()); }, {"is a directory, not a safetensors file"});
}

// Regression: a shape holding a deeply nested array overflowed the stack while its error message
// was being written (dump() recurses); deep nesting is refused before parsing now.
TEST_F(Safetensors, DeeplyNestedHeaderIsRefused) {
    const std::string deep = std::string(100000, '[') + std::string(100000, ']');
    expect_model_error([&] { safetensors_load(raw("deep.safetensors", R"({"w":{"dtype":"F32","shape":)" + deep +
                                                                          R"(,"data_offsets":[0,4]}})", "abcd")); },
                       {"deep.safetensors", "nested deeper than 32 levels"});
}

TEST_F(Safetensors, RejectsBadHeaderLength) {
    const std::string h = R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})";
    expect_model_error([&] { safetensors_load(raw("past.safetensors", h, "abcd", 1000)); },
                       {"past.safetensors", "header length 1000", "past the end of the file"});
    expect_model_error([&] { safetensors_load(raw("huge.safetensors", h, "abcd", int64_t(1) << 40)); },
                       {"huge.safetensors", "implausible"});
}

TEST_F(Safetensors, RejectsNonJsonAndNonObjectHeaders) {
    expect_model_error([&] { safetensors_load(raw("text.safetensors", "this is not json", "")); },
                       {"text.safetensors", "not valid JSON"});
    expect_model_error([&] { safetensors_load(raw("arr.safetensors", "[1,2,3]", "")); },
                       {"arr.safetensors", "not a JSON object"});
    expect_model_error([&] { safetensors_load(raw("entry.safetensors", R"({"a": 5})", "")); },
                       {"entry.safetensors", "'a'", "not an object"});
    expect_model_error([&] { safetensors_load(raw("meta.safetensors", R"({"__metadata__": {"k": 1}})", "")); },
                       {"meta.safetensors", "__metadata__", "'k'"});
}

TEST_F(Safetensors, RejectsBadDtypes) {
    expect_model_error(
        [&] { safetensors_load(raw("f33.safetensors", R"({"w":{"dtype":"F33","shape":[1],"data_offsets":[0,4]}})", "abcd")); },
        {"f33.safetensors", "'w'", "unknown dtype 'F33'", "F32"});
    expect_model_error(
        [&] { safetensors_load(raw("u16.safetensors", R"({"w":{"dtype":"U16","shape":[2],"data_offsets":[0,4]}})", "abcd")); },
        {"u16.safetensors", "'w'", "'U16' is not supported"});
    expect_model_error(
        [&] { safetensors_load(raw("nodt.safetensors", R"({"w":{"shape":[1],"data_offsets":[0,4]}})", "abcd")); },
        {"nodt.safetensors", "'w'", "dtype"});
}

TEST_F(Safetensors, RejectsShapeSizeMismatchAndNegativeDims) {
    expect_model_error(
        [&] { safetensors_load(raw("mismatch.safetensors", R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", "abcdefgh")); },
        {"mismatch.safetensors", "'w'", "needs 12 bytes", "span 8"});
    expect_model_error(
        [&] { safetensors_load(raw("neg.safetensors", R"({"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", "abcdefgh")); },
        {"neg.safetensors", "'w'", "negative dimension"});
    expect_model_error(
        [&] {
            safetensors_load(raw("overflow.safetensors",
                                 R"({"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}})",
                                 "abcdefgh"));
        },
        {"overflow.safetensors", "'w'", "too large"});
}

TEST_F(Safetensors, RejectsBadOffsets) {
    expect_model_error(
        [&] { safetensors_load(raw("range.safetensors", R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", "abcdefgh")); },
        {"range.safetensors", "'w'", "past the end of the data section"});
    expect_model_error(
        [&] { safetensors_load(raw("rev.safetensors", R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[8,4]}})", "abcdefgh")); },
        {"rev.safetensors", "'w'", "reversed"});
    expect_model_error(
        [&] {
            safetensors_load(raw("overlap.safetensors",
                                 R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                                 R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                                 "abcdefghijkl"));
        },
        {"overlap.safetensors", "'b'", "overlaps tensor 'a'"});
    expect_model_error(
        [&] { safetensors_load(raw("hole.safetensors", R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", "abcdefgh")); },
        {"hole.safetensors", "'w'", "hole"});
    expect_model_error(
        [&] { safetensors_load(raw("trail.safetensors", R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", "abcdefgh")); },
        {"trail.safetensors", "tensors cover 4"});
    expect_model_error(
        [&] { safetensors_load(raw("negoff.safetensors", R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}})", "abcd")); },
        {"negoff.safetensors", "'w'", "non-negative"});
}

TEST_F(Safetensors, RejectsInvalidBoolBytes) {
    expect_model_error(
        [&] { safetensors_load(raw("bool.safetensors", R"({"m":{"dtype":"BOOL","shape":[2],"data_offsets":[0,2]}})", std::string("\x01\x07", 2))); },
        {"bool.safetensors", "'m'", "neither 0 nor 1"});
}
