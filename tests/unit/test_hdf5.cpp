// The HDF5 wrapper (files, groups, attributes, fixed arrays, strings, row-extensible tables, error
// handling of missing, foreign and truncated files) and metrics.h5 (MetricsFile).
#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <string>
#include <vector>

#include "h2tune/core/error.h"
#include "h2tune/io/hdf5_file.h"
#include "h2tune/io/metrics_file.h"

namespace fs = std::filesystem;
using namespace h2tune;

namespace {

// A fresh path in the test temp directory, unique per test and process; any old file is removed.
std::string temp_path(const std::string& name) {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    fs::path p = fs::path(::testing::TempDir()) / ("h2tune_hdf5_" + std::to_string(::getpid()) + "_" +
                                                  info->test_suite_name() + "_" + info->name() + "_" + name);
    fs::remove(p);
    return p.string();
}

// Runs f and expects an exception of type E whose message contains every part.
template <class E>
void expect_throw_with(const std::function<void()>& f, const std::vector<std::string>& parts) {
    try {
        f();
        ADD_FAILURE() << "expected an exception";
    } catch (const E& e) {
        const std::string what = e.what();
        for (const auto& p : parts) EXPECT_NE(what.find(p), std::string::npos) << "'" << p << "' not in: " << what;
    } catch (const std::exception& e) {
        ADD_FAILURE() << "wrong exception type: " << e.what();
    }
}

std::string read_bytes(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void write_bytes(const std::string& path, const std::string& bytes) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

}  // namespace

// ---------------------------------------------------------------- files and groups

TEST(Hdf5File, CreateThenOpenReadOnlyAndReadWrite) {
    const std::string path = temp_path("a.h5");
    {
        Hdf5File f(path, Hdf5File::Mode::Create);
        EXPECT_EQ(f.path(), path);
        f.create_group("/g");
    }
    ASSERT_TRUE(fs::exists(path));
    {
        Hdf5File f(path, Hdf5File::Mode::ReadOnly);
        EXPECT_TRUE(f.exists("/g"));
        // Writing through a read-only handle is an IoError, not a crash.
        EXPECT_THROW(f.create_group("/h"), IoError);
    }
    {
        Hdf5File f(path, Hdf5File::Mode::ReadWrite);
        f.create_group("/h");
    }
    Hdf5File f(path, Hdf5File::Mode::ReadOnly);
    EXPECT_TRUE(f.exists("/g"));
    EXPECT_TRUE(f.exists("/h"));
}

TEST(Hdf5File, CreateTruncatesAnExistingFile) {
    const std::string path = temp_path("a.h5");
    {
        Hdf5File f(path, Hdf5File::Mode::Create);
        f.create_group("/old");
    }
    {
        Hdf5File f(path, Hdf5File::Mode::Create);
        EXPECT_FALSE(f.exists("/old"));
    }
}

TEST(Hdf5File, NestedGroupsExistAndCreateGroupIsIdempotent) {
    const std::string path = temp_path("a.h5");
    Hdf5File f(path, Hdf5File::Mode::Create);
    EXPECT_TRUE(f.exists("/"));
    EXPECT_FALSE(f.exists("/a"));
    EXPECT_FALSE(f.exists("/a/b/c"));
    f.create_group("/a/b/c");  // parents created as needed
    EXPECT_TRUE(f.exists("/a"));
    EXPECT_TRUE(f.exists("/a/b"));
    EXPECT_TRUE(f.exists("/a/b/c"));
    EXPECT_FALSE(f.exists("/a/x"));
    EXPECT_FALSE(f.exists("/a/x/y"));  // missing intermediate: false, not an error
    EXPECT_FALSE(f.exists("/a/b/c/d"));

    // Creating again (the leaf or a parent) is a no-op that keeps the contents.
    f.set_attribute("/a/b/c", "marker", int64_t{5});
    f.create_group("/a/b/c");
    f.create_group("/a/b");
    f.create_group("/a");
    EXPECT_EQ(f.int_attribute("/a/b/c", "marker"), 5);

    f.create_group("/a/b/d");
    EXPECT_EQ(f.children("/a/b"), (std::vector<std::string>{"c", "d"}));
    EXPECT_TRUE(f.children("/a/b/c").empty());
    EXPECT_THROW(f.children("/nope"), IoError);
}

TEST(Hdf5File, ExistsSeesDatasets) {
    const std::string path = temp_path("a.h5");
    Hdf5File f(path, Hdf5File::Mode::Create);
    const double v[2] = {1, 2};
    f.write_array("/deep/group/data", H5Type::Float64, {2}, v);  // intermediate groups created
    EXPECT_TRUE(f.exists("/deep"));
    EXPECT_TRUE(f.exists("/deep/group"));
    EXPECT_TRUE(f.exists("/deep/group/data"));
    EXPECT_FALSE(f.exists("/deep/group/other"));
}

// ---------------------------------------------------------------- attributes

TEST(Hdf5File, AttributesOfEveryTypeRoundTrip) {
    const std::string path = temp_path("a.h5");
    {
        Hdf5File f(path, Hdf5File::Mode::Create);
        f.create_group("/g");
        f.set_attribute("/", "name", std::string("h2tune"));
        f.set_attribute("/", "count", int64_t{-1234567890123});
        f.set_attribute("/", "ratio", 0.1);
        f.set_attribute("/g", "name", std::string("group attribute"));
        f.set_attribute("/g", "empty", std::string());
        EXPECT_TRUE(f.has_attribute("/", "name"));
        EXPECT_TRUE(f.has_attribute("/g", "empty"));
        EXPECT_FALSE(f.has_attribute("/", "missing"));
        EXPECT_FALSE(f.has_attribute("/g", "count"));
    }
    Hdf5File f(path, Hdf5File::Mode::ReadOnly);
    EXPECT_EQ(f.string_attribute("/", "name"), "h2tune");
    EXPECT_EQ(f.int_attribute("/", "count"), -1234567890123);
    EXPECT_EQ(f.double_attribute("/", "ratio"), 0.1);  // exact: float64 on disk
    EXPECT_EQ(f.string_attribute("/g", "name"), "group attribute");
    EXPECT_EQ(f.string_attribute("/g", "empty"), "");
}

TEST(Hdf5File, SetAttributeReplacesAnExistingOne) {
    const std::string path = temp_path("a.h5");
    {
        Hdf5File f(path, Hdf5File::Mode::Create);
        f.set_attribute("/", "s", std::string("first value, rather long"));
        f.set_attribute("/", "s", std::string("second"));
        f.set_attribute("/", "i", int64_t{1});
        f.set_attribute("/", "i", int64_t{2});
        f.set_attribute("/", "d", 1.5);
        f.set_attribute("/", "d", -2.25);
        // Replacing may change the type too.
        f.set_attribute("/", "x", std::string("text"));
        f.set_attribute("/", "x", int64_t{42});
        EXPECT_EQ(f.string_attribute("/", "s"), "second");
    }
    Hdf5File f(path, Hdf5File::Mode::ReadOnly);
    EXPECT_EQ(f.string_attribute("/", "s"), "second");
    EXPECT_EQ(f.int_attribute("/", "i"), 2);
    EXPECT_EQ(f.double_attribute("/", "d"), -2.25);
    EXPECT_EQ(f.int_attribute("/", "x"), 42);
}

TEST(Hdf5File, MissingAttributeOrObjectThrowsIoError) {
    const std::string path = temp_path("a.h5");
    Hdf5File f(path, Hdf5File::Mode::Create);
    f.create_group("/g");
    expect_throw_with<IoError>([&] { f.string_attribute("/", "nope"); }, {"nope", path});
    expect_throw_with<IoError>([&] { f.int_attribute("/g", "nope"); }, {"nope", path + ":/g"});
    EXPECT_THROW(f.double_attribute("/", "nope"), IoError);
    // The object itself is missing.
    EXPECT_THROW(f.string_attribute("/missing", "a"), IoError);
    EXPECT_THROW(f.set_attribute("/missing", "a", int64_t{1}), IoError);
    EXPECT_THROW(f.has_attribute("/missing", "a"), IoError);
    // A string attribute is not readable as a number.
    f.set_attribute("/", "s", std::string("text"));
    EXPECT_THROW(f.int_attribute("/", "s"), IoError);
}

// ---------------------------------------------------------------- arrays and strings

TEST(Hdf5File, ArraysOfEveryTypeRoundTripWithTheirShapes) {
    const std::string path = temp_path("a.h5");
    const std::vector<double> f64 = {1.0, -2.5, 3.25, 1e300, -1e-300, 0.1};
    const std::vector<float> f32 = {0.5f, -1.5f, 3.0e30f, 1.0e-30f, 7.0f, -8.0f, 9.0f, 10.0f};
    const std::vector<int64_t> i64 = {INT64_MIN, -1, 0, 1, INT64_MAX};
    std::vector<uint8_t> u8(24);
    for (size_t i = 0; i < u8.size(); ++i) u8[i] = static_cast<uint8_t>(i * 11);
    {
        Hdf5File f(path, Hdf5File::Mode::Create);
        f.write_array("/f64", H5Type::Float64, {2, 3}, f64.data());
        f.write_array("/g/f32", H5Type::Float32, {2, 2, 2}, f32.data());
        f.write_array("/i64", H5Type::Int64, {5}, i64.data());
        f.write_array("/u8", H5Type::UInt8, {4, 6}, u8.data());
    }
    Hdf5File f(path, Hdf5File::Mode::ReadOnly);
    EXPECT_EQ(f.dataset_shape("/f64"), (std::vector<int64_t>{2, 3}));
    EXPECT_EQ(f.dataset_shape("/g/f32"), (std::vector<int64_t>{2, 2, 2}));
    EXPECT_EQ(f.dataset_shape("/i64"), (std::vector<int64_t>{5}));
    EXPECT_EQ(f.dataset_shape("/u8"), (std::vector<int64_t>{4, 6}));

    std::vector<double> f64_back(6);
    f.read_array("/f64", H5Type::Float64, f64_back.data(), 6);
    EXPECT_EQ(f64_back, f64);
    EXPECT_EQ(f.read_doubles("/f64"), f64);
    std::vector<float> f32_back(8);
    f.read_array("/g/f32", H5Type::Float32, f32_back.data(), 8);
    EXPECT_EQ(f32_back, f32);
    std::vector<int64_t> i64_back(5);
    f.read_array("/i64", H5Type::Int64, i64_back.data(), 5);
    EXPECT_EQ(i64_back, i64);
    EXPECT_EQ(f.read_int64s("/i64"), i64);
    std::vector<uint8_t> u8_back(24);
    f.read_array("/u8", H5Type::UInt8, u8_back.data(), 24);
    EXPECT_EQ(u8_back, u8);

    // Reading with a numeric conversion (uint8 -> float64) converts element-wise.
    const std::vector<double> u8_as_double = f.read_doubles("/u8");
    ASSERT_EQ(u8_as_double.size(), 24u);
    for (size_t i = 0; i < 24; ++i) EXPECT_EQ(u8_as_double[i], static_cast<double>(u8[i]));
}

TEST(Hdf5File, ReadArrayWithTheWrongElementCountThrows) {
    const std::string path = temp_path("a.h5");
    Hdf5File f(path, Hdf5File::Mode::Create);
    const std::vector<double> v = {1, 2, 3, 4, 5, 6};
    f.write_array("/v", H5Type::Float64, {2, 3}, v.data());
    std::vector<double> out(10, -1.0);
    expect_throw_with<IoError>([&] { f.read_array("/v", H5Type::Float64, out.data(), 5); }, {"/v", "6", "5"});
    EXPECT_THROW(f.read_array("/v", H5Type::Float64, out.data(), 7), IoError);
    // Nothing was written into the buffer by the rejected reads.
    for (double x : out) EXPECT_EQ(x, -1.0);
    expect_throw_with<IoError>([&] { f.read_array("/missing", H5Type::Float64, out.data(), 6); }, {"/missing"});
    EXPECT_THROW(f.dataset_shape("/missing"), IoError);
}

TEST(Hdf5File, WritingAnExistingDatasetThrows) {
    const std::string path = temp_path("a.h5");
    Hdf5File f(path, Hdf5File::Mode::Create);
    const double v[1] = {1};
    f.write_array("/v", H5Type::Float64, {1}, v);
    EXPECT_THROW(f.write_array("/v", H5Type::Float64, {1}, v), IoError);
    f.write_string("/s", "x");
    EXPECT_THROW(f.write_string("/s", "y"), IoError);
    EXPECT_EQ(f.read_string("/s"), "x");
}

TEST(Hdf5File, StringsRoundTripIncludingUtf8) {
    const std::string path = temp_path("a.h5");
    const std::string ascii = "[run]\nmethod = local\nrounds = 3\n";
    const std::string utf8 = "Grüße, 世界 — ñandú 🙂";
    const std::string long_text(100000, 'x');
    {
        Hdf5File f(path, Hdf5File::Mode::Create);
        f.write_string("/config", ascii);
        f.write_string("/text/utf8", utf8);
        f.write_string("/empty", "");
        f.write_string("/long", long_text);
        f.set_attribute("/", "utf8", utf8);
    }
    Hdf5File f(path, Hdf5File::Mode::ReadOnly);
    EXPECT_EQ(f.read_string("/config"), ascii);
    EXPECT_EQ(f.read_string("/text/utf8"), utf8);
    EXPECT_EQ(f.read_string("/empty"), "");
    EXPECT_EQ(f.read_string("/long"), long_text);
    EXPECT_EQ(f.string_attribute("/", "utf8"), utf8);
    EXPECT_THROW(f.read_string("/missing"), IoError);
}

// ---------------------------------------------------------------- tables

TEST(Hdf5File, TablesGrowByOneRowPerAppendInOrder) {
    const std::string path = temp_path("a.h5");
    {
        Hdf5File f(path, Hdf5File::Mode::Create);
        f.create_table("/metrics/loss", H5Type::Float64, 3, "training loss per client");
        EXPECT_EQ(f.table_rows("/metrics/loss"), 0);
        EXPECT_EQ(f.dataset_shape("/metrics/loss"), (std::vector<int64_t>{0, 3}));
        for (int r = 0; r < 5; ++r) {
            const double row[3] = {r + 0.0, r + 0.5, -r - 0.25};
            f.append_row("/metrics/loss", H5Type::Float64, row, 3);
            EXPECT_EQ(f.table_rows("/metrics/loss"), r + 1);
        }
        f.create_table("/counts", H5Type::Int64, 2);
        const int64_t c0[2] = {1, 2}, c1[2] = {3, 4};
        f.append_row("/counts", H5Type::Int64, c0, 2);
        f.append_row("/counts", H5Type::Int64, c1, 2);
        f.create_table("/f32", H5Type::Float32, 1);
        const float x = 1.5f;
        f.append_row("/f32", H5Type::Float32, &x, 1);
    }
    Hdf5File f(path, Hdf5File::Mode::ReadOnly);
    EXPECT_EQ(f.dataset_shape("/metrics/loss"), (std::vector<int64_t>{5, 3}));
    EXPECT_EQ(f.string_attribute("/metrics/loss", "description"), "training loss per client");
    const auto v = f.read_doubles("/metrics/loss");
    ASSERT_EQ(v.size(), 15u);
    for (int r = 0; r < 5; ++r) {
        EXPECT_EQ(v[static_cast<size_t>(3 * r)], r + 0.0);
        EXPECT_EQ(v[static_cast<size_t>(3 * r + 1)], r + 0.5);
        EXPECT_EQ(v[static_cast<size_t>(3 * r + 2)], -r - 0.25);
    }
    EXPECT_EQ(f.read_int64s("/counts"), (std::vector<int64_t>{1, 2, 3, 4}));
    EXPECT_EQ(f.read_doubles("/f32"), (std::vector<double>{1.5}));
    EXPECT_FALSE(f.has_attribute("/counts", "description"));
}

TEST(Hdf5File, TablesCanBeExtendedAfterReopening) {
    const std::string path = temp_path("a.h5");
    {
        Hdf5File f(path, Hdf5File::Mode::Create);
        f.create_table("/t", H5Type::Float64, 2);
        const double row[2] = {1, 2};
        f.append_row("/t", H5Type::Float64, row, 2);
    }
    {
        Hdf5File f(path, Hdf5File::Mode::ReadWrite);
        const double row[2] = {3, 4};
        f.append_row("/t", H5Type::Float64, row, 2);
    }
    Hdf5File f(path, Hdf5File::Mode::ReadOnly);
    EXPECT_EQ(f.table_rows("/t"), 2);
    EXPECT_EQ(f.read_doubles("/t"), (std::vector<double>{1, 2, 3, 4}));
}

TEST(Hdf5File, AppendWithTheWrongColumnCountThrowsAndLeavesTheTable) {
    const std::string path = temp_path("a.h5");
    Hdf5File f(path, Hdf5File::Mode::Create);
    f.create_table("/t", H5Type::Float64, 3);
    const double row[4] = {1, 2, 3, 4};
    f.append_row("/t", H5Type::Float64, row, 3);
    expect_throw_with<IoError>([&] { f.append_row("/t", H5Type::Float64, row, 2); }, {"/t", "3 columns"});
    EXPECT_THROW(f.append_row("/t", H5Type::Float64, row, 4), IoError);
    EXPECT_EQ(f.table_rows("/t"), 1);
    EXPECT_THROW(f.append_row("/missing", H5Type::Float64, row, 3), IoError);
    EXPECT_THROW(f.create_table("/bad", H5Type::Float64, 0), IoError);
    // A fixed array is not a table: it cannot grow.
    f.write_array("/fixed", H5Type::Float64, {1, 3}, row);
    EXPECT_THROW(f.append_row("/fixed", H5Type::Float64, row, 3), IoError);
    EXPECT_EQ(f.table_rows("/fixed"), 1);
}

// ---------------------------------------------------------------- bad files

TEST(Hdf5File, OpeningAMissingFileThrowsIoErrorNamingIt) {
    const std::string path = temp_path("does_not_exist.h5");
    expect_throw_with<IoError>([&] { Hdf5File f(path, Hdf5File::Mode::ReadOnly); }, {path});
    expect_throw_with<IoError>([&] { Hdf5File f(path, Hdf5File::Mode::ReadWrite); }, {path});
    EXPECT_FALSE(fs::exists(path));  // opening never creates
    const std::string in_missing_dir = temp_path("no_such_dir") + "/x.h5";
    expect_throw_with<IoError>([&] { Hdf5File f(in_missing_dir, Hdf5File::Mode::Create); }, {in_missing_dir});
}

TEST(Hdf5File, OpeningANonHdf5FileThrowsIoErrorNamingIt) {
    const std::string garbage = temp_path("garbage.h5");
    std::string bytes;
    for (int i = 0; i < 4096; ++i) bytes.push_back(static_cast<char>((i * 37 + 11) % 256));
    write_bytes(garbage, bytes);
    expect_throw_with<IoError>([&] { Hdf5File f(garbage, Hdf5File::Mode::ReadOnly); }, {garbage});
    expect_throw_with<IoError>([&] { Hdf5File f(garbage, Hdf5File::Mode::ReadWrite); }, {garbage});
    EXPECT_EQ(read_bytes(garbage), bytes);  // left untouched

    const std::string empty = temp_path("empty.h5");
    write_bytes(empty, "");
    expect_throw_with<IoError>([&] { Hdf5File f(empty, Hdf5File::Mode::ReadOnly); }, {empty});

    const std::string text = temp_path("text.h5");
    write_bytes(text, "[run]\nmethod = local\n");
    expect_throw_with<IoError>([&] { Hdf5File f(text, Hdf5File::Mode::ReadOnly); }, {text});
}

TEST(Hdf5File, ATruncatedFileIsRejectedWithIoError) {
    const std::string path = temp_path("full.h5");
    {
        Hdf5File f(path, Hdf5File::Mode::Create);
        f.set_attribute("/", "name", std::string("full"));
        std::vector<double> big(20000);
        for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<double>(i);
        f.write_array("/a/big", H5Type::Float64, {200, 100}, big.data());
        f.create_table("/metrics/loss", H5Type::Float64, 4);
        for (int r = 0; r < 50; ++r) {
            const double row[4] = {1.0 * r, 2.0 * r, 3.0 * r, 4.0 * r};
            f.append_row("/metrics/loss", H5Type::Float64, row, 4);
        }
        f.write_string("/config", "some text");
    }
    const std::string bytes = read_bytes(path);
    ASSERT_GT(bytes.size(), 160000u);
    {
        Hdf5File f(path, Hdf5File::Mode::ReadOnly);  // the intact file opens
        EXPECT_EQ(f.table_rows("/metrics/loss"), 50);
    }
    const std::string cut = temp_path("half.h5");
    write_bytes(cut, bytes.substr(0, bytes.size() / 2));
    // Either the open or the first read must fail with an IoError naming the file; no crash.
    expect_throw_with<IoError>(
        [&] {
            Hdf5File f(cut, Hdf5File::Mode::ReadOnly);
            (void)f.read_doubles("/a/big");
            (void)f.read_doubles("/metrics/loss");
            (void)f.read_string("/config");
        },
        {cut});
    // A file cut right after the superblock signature is rejected too.
    const std::string stub = temp_path("stub.h5");
    write_bytes(stub, bytes.substr(0, 64));
    expect_throw_with<IoError>(
        [&] {
            Hdf5File f(stub, Hdf5File::Mode::ReadOnly);
            (void)f.string_attribute("/", "name");
        },
        {stub});
}

// ---------------------------------------------------------------- MetricsFile

namespace {
const std::vector<std::string> kClient = {"train_loss", "test_accuracy"};
const std::vector<std::string> kRound = {"round_seconds", "aggregate_seconds"};

std::map<std::string, std::vector<double>> client_round(double base) {
    return {{"train_loss", {base, base + 0.1, base + 0.2}}, {"test_accuracy", {-base, -base - 0.1, -base - 0.2}}};
}
}  // namespace

TEST(MetricsFile, CreatesTheDocumentedLayout) {
    const std::string path = temp_path("metrics.h5");
    {
        MetricsFile m(path, 3, kClient, kRound, false);
        m.set_attribute("method", std::string("local"));
        m.set_attribute("rounds_planned", int64_t{7});
        m.set_attribute("lr", 2e-4);
        m.write_config("[run]\nrounds = 7\n");
        m.write_client_names({"a/x", "b/y", "c/z"});
        m.write_client_values("majority_rate", {0.5, 0.25, 1.0});
        EXPECT_THROW(m.write_client_values("rank", {1.0, 2.0}), IoError);
        EXPECT_EQ(m.rounds_written(), 0);
    }
    Hdf5File f(path, Hdf5File::Mode::ReadOnly);
    EXPECT_EQ(f.int_attribute("/", "num_clients"), 3);
    EXPECT_EQ(f.string_attribute("/", "method"), "local");
    EXPECT_EQ(f.int_attribute("/", "rounds_planned"), 7);
    EXPECT_EQ(f.double_attribute("/", "lr"), 2e-4);
    EXPECT_EQ(f.read_string("/config"), "[run]\nrounds = 7\n");
    EXPECT_EQ(f.string_attribute("/clients", "name_1"), "b/y");
    EXPECT_EQ(f.read_doubles("/clients/majority_rate"), (std::vector<double>{0.5, 0.25, 1.0}));
    EXPECT_FALSE(f.exists("/clients/rank"));
    EXPECT_EQ(f.dataset_shape("/metrics/train_loss"), (std::vector<int64_t>{0, 3}));
    EXPECT_EQ(f.dataset_shape("/metrics/test_accuracy"), (std::vector<int64_t>{0, 3}));
    EXPECT_EQ(f.dataset_shape("/rounds/round_seconds"), (std::vector<int64_t>{0, 1}));
    EXPECT_EQ(f.dataset_shape("/rounds/aggregate_seconds"), (std::vector<int64_t>{0, 1}));
}

TEST(MetricsFile, RefusesToOverwriteUnlessAsked) {
    const std::string path = temp_path("metrics.h5");
    {
        MetricsFile m(path, 3, kClient, kRound, false);
        m.append_round(client_round(1), {{"round_seconds", 1.0}});
    }
    expect_throw_with<ConfigError>([&] { MetricsFile m(path, 3, kClient, kRound, false); }, {path});
    {
        // The refused attempt left the old file intact.
        Hdf5File f(path, Hdf5File::Mode::ReadOnly);
        EXPECT_EQ(f.table_rows("/metrics/train_loss"), 1);
    }
    // Even a non-HDF5 file is not overwritten silently.
    const std::string other = temp_path("notes.txt");
    write_bytes(other, "precious");
    EXPECT_THROW(MetricsFile(other, 1, kClient, kRound, false), ConfigError);
    EXPECT_EQ(read_bytes(other), "precious");

    MetricsFile m(path, 3, kClient, kRound, true);
    EXPECT_EQ(m.rounds_written(), 0);
}

TEST(MetricsFile, AppendRoundWritesEveryTableAndCountsRounds) {
    const std::string path = temp_path("metrics.h5");
    {
        MetricsFile m(path, 3, kClient, kRound, false);
        for (int r = 0; r < 4; ++r) {
            m.append_round(client_round(r), {{"round_seconds", 10.0 + r}, {"aggregate_seconds", 0.5 * r}});
            EXPECT_EQ(m.rounds_written(), r + 1);
        }
    }
    Hdf5File f(path, Hdf5File::Mode::ReadOnly);
    EXPECT_EQ(f.dataset_shape("/metrics/train_loss"), (std::vector<int64_t>{4, 3}));
    const auto loss = f.read_doubles("/metrics/train_loss");
    const auto acc = f.read_doubles("/metrics/test_accuracy");
    for (int r = 0; r < 4; ++r)
        for (int k = 0; k < 3; ++k) {
            EXPECT_DOUBLE_EQ(loss[static_cast<size_t>(3 * r + k)], r + 0.1 * k);
            EXPECT_DOUBLE_EQ(acc[static_cast<size_t>(3 * r + k)], -r - 0.1 * k);
        }
    EXPECT_EQ(f.read_doubles("/rounds/round_seconds"), (std::vector<double>{10, 11, 12, 13}));
    EXPECT_EQ(f.read_doubles("/rounds/aggregate_seconds"), (std::vector<double>{0, 0.5, 1.0, 1.5}));
}

TEST(MetricsFile, ARejectedRoundWritesNothing) {
    const std::string path = temp_path("metrics.h5");
    MetricsFile m(path, 3, kClient, kRound, false);
    m.append_round(client_round(0), {{"round_seconds", 1.0}});

    auto missing = client_round(1);
    missing.erase("test_accuracy");  // the second metric: the first one must not be appended either
    expect_throw_with<IoError>([&] { m.append_round(missing, {}); }, {"test_accuracy"});
    auto short_row = client_round(1);
    short_row["test_accuracy"].pop_back();
    EXPECT_THROW(m.append_round(short_row, {}), IoError);
    auto first_missing = client_round(1);
    first_missing.erase("train_loss");
    EXPECT_THROW(m.append_round(first_missing, {}), IoError);

    EXPECT_EQ(m.rounds_written(), 1);
    for (const auto& t : {"/metrics/train_loss", "/metrics/test_accuracy", "/rounds/round_seconds",
                          "/rounds/aggregate_seconds"})
        EXPECT_EQ(m.file().table_rows(t), 1) << t;

    m.append_round(client_round(2), {{"round_seconds", 3.0}});
    EXPECT_EQ(m.rounds_written(), 2);
    EXPECT_EQ(m.file().read_doubles("/metrics/train_loss")[3], 2.0);
}

TEST(MetricsFile, ReopenAppendsFurtherRounds) {
    const std::string path = temp_path("metrics.h5");
    {
        MetricsFile m(path, 3, kClient, kRound, false);
        m.append_round(client_round(0), {{"round_seconds", 1.0}, {"aggregate_seconds", 0.1}});
        m.append_round(client_round(1), {{"round_seconds", 2.0}, {"aggregate_seconds", 0.2}});
    }
    {
        MetricsFile m(path);
        EXPECT_EQ(m.rounds_written(), 2);
        m.append_round(client_round(2), {{"round_seconds", 3.0}, {"aggregate_seconds", 0.3}});
        EXPECT_EQ(m.rounds_written(), 3);
        // The resumed file still checks that every client metric is present.
        EXPECT_THROW(m.append_round({{"train_loss", {1, 2, 3}}}, {}), IoError);
        EXPECT_EQ(m.rounds_written(), 3);
    }
    Hdf5File f(path, Hdf5File::Mode::ReadOnly);
    EXPECT_EQ(f.int_attribute("/", "num_clients"), 3);
    for (const auto& t : {"/metrics/train_loss", "/metrics/test_accuracy", "/rounds/round_seconds",
                          "/rounds/aggregate_seconds"})
        EXPECT_EQ(f.table_rows(t), 3) << t;
    const auto loss = f.read_doubles("/metrics/train_loss");
    EXPECT_DOUBLE_EQ(loss[6], 2.0);
    EXPECT_DOUBLE_EQ(loss[8], 2.2);
    EXPECT_EQ(f.read_doubles("/rounds/round_seconds"), (std::vector<double>{1, 2, 3}));
    EXPECT_EQ(f.read_doubles("/rounds/aggregate_seconds"), (std::vector<double>{0.1, 0.2, 0.3}));
}

TEST(MetricsFile, ReopeningAMissingOrForeignFileThrows) {
    const std::string missing = temp_path("missing.h5");
    expect_throw_with<IoError>([&] { MetricsFile m(missing); }, {missing});
    // An HDF5 file that is not a metrics file (no num_clients attribute).
    const std::string plain = temp_path("plain.h5");
    { Hdf5File f(plain, Hdf5File::Mode::Create); }
    EXPECT_THROW(MetricsFile m(plain), IoError);
}

TEST(MetricsFile, RoundsAreVisibleToASecondReaderWhileTheWriterIsOpen) {
    const std::string path = temp_path("metrics.h5");
    MetricsFile m(path, 3, kClient, kRound, false);
    m.append_round(client_round(0), {{"round_seconds", 1.0}});
    m.append_round(client_round(1), {{"round_seconds", 2.0}});
    {
        Hdf5File reader(path, Hdf5File::Mode::ReadOnly);
        EXPECT_EQ(reader.table_rows("/metrics/train_loss"), 2);
        EXPECT_EQ(reader.read_doubles("/rounds/round_seconds"), (std::vector<double>{1, 2}));
    }
    m.append_round(client_round(2), {{"round_seconds", 3.0}});
    {
        Hdf5File reader(path, Hdf5File::Mode::ReadOnly);
        EXPECT_EQ(reader.table_rows("/metrics/test_accuracy"), 3);
    }
}

TEST(MetricsFile, AppendRoundFlushesToDisk) {
    // append_round flushes: a byte copy of the file taken while the writer is still open (what a
    // crash would leave behind) is a valid HDF5 file holding every round appended so far.
    const std::string path = temp_path("metrics.h5");
    MetricsFile m(path, 3, kClient, kRound, false);
    m.set_attribute("method", std::string("local"));
    m.append_round(client_round(0), {{"round_seconds", 1.0}});
    m.append_round(client_round(1), {{"round_seconds", 2.0}});
    const std::string snapshot = temp_path("snapshot.h5");
    write_bytes(snapshot, read_bytes(path));
    Hdf5File copy(snapshot, Hdf5File::Mode::ReadOnly);
    EXPECT_EQ(copy.int_attribute("/", "num_clients"), 3);
    EXPECT_EQ(copy.table_rows("/metrics/train_loss"), 2);
    EXPECT_EQ(copy.table_rows("/metrics/test_accuracy"), 2);
    EXPECT_EQ(copy.read_doubles("/rounds/round_seconds"), (std::vector<double>{1, 2}));
    const auto loss = copy.read_doubles("/metrics/train_loss");
    EXPECT_DOUBLE_EQ(loss[5], 1.2);
}

// A run's metrics are closed between rounds, so another process (h5py) can open them; HDF5's
// file locking would otherwise refuse while the writer holds the file.
TEST(MetricsFile, FileIsClosedBetweenRoundsAndReopenedForTheNextWrite) {
    const std::string path = temp_path("metrics_closed.h5");
    MetricsFile m(path, 3, kClient, kRound, false);
    std::map<std::string, std::vector<double>> row;
    for (const auto& name : kClient) row[name] = {1.0, 2.0, 3.0};
    m.append_round(row, {});
    {
        // HDF5 takes an flock on files it holds open; another process (h5py) is refused while the
        // writer holds it. A fresh descriptor's exclusive lock stands in for that process.
        int fd = ::open(path.c_str(), O_RDONLY);
        ASSERT_GE(fd, 0);
        EXPECT_EQ(::flock(fd, LOCK_EX | LOCK_NB), 0) << "metrics file still locked between rounds";
        ::flock(fd, LOCK_UN);
        ::close(fd);
    }
    m.append_round(row, {});
    EXPECT_EQ(m.rounds_written(), 2);
}
