#include <gtest/gtest.h>

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <string>

#include "h2tune/core/error.h"
#include "h2tune/data/example.h"

using namespace h2tune;

namespace {

std::string write_file(const std::string& name, const std::string& content) {
    std::string path = ::testing::TempDir() + name;
    std::ofstream(path, std::ios::binary) << content;
    return path;
}

void expect_data_error(const std::string& path, const std::string& fragment) {
    try {
        read_jsonl(path);
        FAIL() << "expected DataError with '" << fragment << "'";
    } catch (const DataError& e) {
        EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
    }
}

}  // namespace

TEST(Jsonl, ReadsExamplesSkipsBlankLinesAndKeepsLineNumbers) {
    auto path = write_file("ok.jsonl",
                           "{\"instruction\": \"Classify\", \"input\": \"hello\", \"output\": \"ham\"}\n"
                           "\n"
                           "{\"instruction\": \"Classify\", \"output\": \"spam\", \"extra\": 3}\r\n");
    auto ex = read_jsonl(path);
    ASSERT_EQ(ex.size(), 2u);
    EXPECT_EQ(ex[0].input, "hello");
    EXPECT_EQ(ex[0].output, "ham");
    EXPECT_EQ(ex[0].line, 1);
    EXPECT_EQ(ex[1].input, "");  // optional
    EXPECT_EQ(ex[1].output, "spam");
    EXPECT_EQ(ex[1].line, 3);
}

TEST(Jsonl, KeepsUnicodeExactly) {
    auto path = write_file("utf8.jsonl",
                           "{\"instruction\": \"Übersetze\", \"input\": \"日本語 🙂 \\u00e9\", \"output\": \"ok\"}\n");
    auto ex = read_jsonl(path);
    EXPECT_EQ(ex[0].instruction, "Übersetze");
    EXPECT_EQ(ex[0].input, "日本語 🙂 é");
}

TEST(Jsonl, LimitKeepsFirstExamples) {
    std::string text;
    for (int i = 0; i < 10; ++i) text += "{\"instruction\": \"i\", \"output\": \"o" + std::to_string(i) + "\"}\n";
    auto ex = read_jsonl(write_file("limit.jsonl", text), 3);
    ASSERT_EQ(ex.size(), 3u);
    EXPECT_EQ(ex[2].output, "o2");
}

TEST(Jsonl, MalformedInputsNameFileAndLine) {
    expect_data_error(write_file("empty.jsonl", ""), "empty.jsonl: no examples");
    expect_data_error(write_file("blank.jsonl", "\n  \n"), "no examples");
    expect_data_error(write_file("bad.jsonl", "{\"instruction\": \"a\", \"output\": \"b\"}\n{not json}\n"),
                      "bad.jsonl:2: malformed JSON");
    expect_data_error(write_file("array.jsonl", "[1, 2]\n"), "array.jsonl:1: expected a JSON object");
    expect_data_error(write_file("nooutput.jsonl", "{\"instruction\": \"a\"}\n"),
                      "nooutput.jsonl:1: missing string field 'output'");
    expect_data_error(write_file("numout.jsonl", "{\"instruction\": \"a\", \"output\": 5}\n"),
                      "numout.jsonl:1: field 'output' must be a string");
    expect_data_error(write_file("emptyout.jsonl", "{\"instruction\": \"a\", \"output\": \"\"}\n"),
                      "emptyout.jsonl:1: field 'output' is empty");
    expect_data_error(::testing::TempDir() + "missing.jsonl", "cannot open");
}

TEST(Jsonl, MajorityRateAndDistinctOutputs) {
    std::vector<Example> ex(5);
    const char* outs[] = {"a", "b", "a", "c", "a"};
    for (int i = 0; i < 5; ++i) ex[static_cast<size_t>(i)].output = outs[i];
    EXPECT_DOUBLE_EQ(majority_rate(ex), 0.6);
    EXPECT_EQ(distinct_outputs(ex), (std::vector<std::string>{"a", "b", "c"}));
    EXPECT_DOUBLE_EQ(majority_rate({}), 0.0);
}

TEST(Jsonl, TaskInfoReadsLabelsAndRejectsMalformed) {
    auto ok = write_file("task.json", R"({"name": "spam", "labels": ["spam", "ham"], "majority_rate_test": 0.5})");
    TaskInfo t = read_task_info(ok);
    EXPECT_EQ(t.name, "spam");
    EXPECT_EQ(t.labels, (std::vector<std::string>{"spam", "ham"}));
    EXPECT_DOUBLE_EQ(t.majority_rate_test, 0.5);
    EXPECT_THROW(read_task_info(write_file("task_bad.json", "{\"labels\": [1]")), DataError);
    EXPECT_THROW(read_task_info(write_file("task_noname.json", "{\"labels\": []}")), DataError);
}

// Regression: a label listed twice in task.json was accepted and counted as two classes.
TEST(Jsonl, DuplicateTaskLabelsAreRefusedByName) {
    const auto path = write_file("task_dup.json", R"({"name": "spam", "labels": ["spam", "ham", "spam"]})");
    try {
        read_task_info(path);
        FAIL() << "expected DataError";
    } catch (const DataError& e) {
        EXPECT_NE(std::string(e.what()).find("task_dup.json: labels: 'spam' appears more than once"), std::string::npos)
            << e.what();
    }
    EXPECT_EQ(parse_task_info(R"({"name": "x", "labels": ["a", "b"]})", "mem").labels.size(), 2u);
    EXPECT_THROW(parse_task_info("[1, 2]", "mem"), DataError);
    EXPECT_THROW(parse_task_info("", "mem"), DataError);
}

TEST(Jsonl, ParsesTextWithTheSourceInMessages) {
    const auto ex = parse_jsonl("{\"instruction\": \"a\", \"output\": \"b\"}\r\n\n{\"instruction\": \"c\", \"output\": \"d\"}",
                                "mem.jsonl");
    ASSERT_EQ(ex.size(), 2u);
    EXPECT_EQ(ex[1].line, 3);
    EXPECT_EQ(ex[1].output, "d");
    try {
        parse_jsonl("{\"instruction\": \"a\", \"output\": \"b\"}\n{\"output\": 1}\n", "mem.jsonl");
        FAIL() << "expected DataError";
    } catch (const DataError& e) {
        EXPECT_NE(std::string(e.what()).find("mem.jsonl:2: missing string field 'instruction'"), std::string::npos) << e.what();
    }
}

// A FIFO or a device as the training file used to be read for ever (a FIFO without a writer
// blocks, /dev/zero never ends); only a regular file is read now, and the error says which file.
TEST(Jsonl, OnlyRegularFilesAreRead) {
    const std::string fifo = ::testing::TempDir() + "h2tune_jsonl_fifo_" + std::to_string(::getpid());
    ::unlink(fifo.c_str());
    ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
    try {
        read_jsonl(fifo, 0, "training file");
        FAIL() << "expected DataError";
    } catch (const DataError& e) {
        EXPECT_NE(std::string(e.what()).find(fifo + ": not a regular file (a FIFO, socket or device); give the training file itself"),
                  std::string::npos) << e.what();
    }
    ::unlink(fifo.c_str());
    expect_data_error("/dev/zero", "/dev/zero: not a regular file (a FIFO, socket or device); give the JSONL file itself");
    expect_data_error(::testing::TempDir(), "is a directory, not a JSONL file");
    EXPECT_THROW(read_task_info("/dev/zero"), DataError);
}

TEST(Jsonl, ShippedTaskFilesParseWhenPrepared) {
    for (const char* task : {"spam", "wordnet", "sotu", "fortune"}) {
        std::string dir = std::string(H2TUNE_SOURCE_DIR) + "/data/tasks/" + task;
        if (!std::ifstream(dir + "/task.json")) GTEST_SKIP() << "data not prepared (scripts/prepare_data.py)";
        TaskInfo info = read_task_info(dir + "/task.json");
        auto test = read_jsonl(dir + "/test.jsonl");
        EXPECT_GE(info.labels.size(), 2u);
        for (const auto& e : test)
            EXPECT_NE(std::find(info.labels.begin(), info.labels.end(), e.output), info.labels.end()) << e.output;
        EXPECT_NEAR(majority_rate(test), info.majority_rate_test, 1e-9);
    }
}

TEST(Jsonl, SplitLabelsTrimsAndDropsBlanks) {
    EXPECT_EQ(split_labels(" spam , ham,,x y "), (std::vector<std::string>{"spam", "ham", "x y"}));
    EXPECT_TRUE(split_labels("").empty());
}
