#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "h2tune/core/error.h"
#include "h2tune/core/job_config.h"
#include "h2tune/core/methods.h"

using namespace h2tune;

namespace {

const char* kValidJob = R"(# a small heterogeneous federation
[run]
name = test
method = h2tune
rounds = 3
seed = 7

[federation]
max_rank = 32
modules = q,v,up
participation = 0.5

[clients]
lr = 1e-3
batch_size = 8

[client.0]
model = h2-tiny
task = spam
rank = 8

[client.1]
model = h2-small
task = wordnet
resource = medium
lr = 5e-4
)";

// Expects parse to throw ConfigError whose message contains every fragment.
void expect_error(const std::string& text, const std::vector<std::string>& fragments,
                  const ConfigOverrides& overrides = {}) {
    try {
        parse_job_config(text, "job.ini", overrides);
        FAIL() << "expected ConfigError containing '" << fragments.front() << "'";
    } catch (const ConfigError& e) {
        for (const auto& f : fragments) EXPECT_NE(std::string(e.what()).find(f), std::string::npos) << e.what();
    }
}

std::string replace(std::string text, const std::string& from, const std::string& to) {
    auto pos = text.find(from);
    EXPECT_NE(pos, std::string::npos) << from;
    return text.replace(pos, from.size(), to);
}

}  // namespace

TEST(JobConfig, ParsesValidFileWithDefaultsAndClientDefaults) {
    JobConfig cfg = parse_job_config(kValidJob, "job.ini");
    EXPECT_EQ(cfg.run.name, "test");
    EXPECT_EQ(cfg.run.rounds, 3);
    EXPECT_EQ(cfg.run.seed, 7u);
    EXPECT_EQ(cfg.federation.max_rank, 32);
    EXPECT_EQ(cfg.federation.modules, (std::vector<std::string>{"q", "v", "up"}));
    EXPECT_DOUBLE_EQ(cfg.federation.participation, 0.5);
    ASSERT_EQ(cfg.clients.size(), 2u);
    EXPECT_EQ(cfg.clients[0].model, "h2-tiny");
    EXPECT_EQ(cfg.clients[0].effective_rank(32), 8);
    EXPECT_DOUBLE_EQ(cfg.clients[0].lr, 1e-3);  // from [clients]
    EXPECT_EQ(cfg.clients[0].batch_size, 8);
    EXPECT_EQ(cfg.clients[1].effective_rank(32), 16);  // medium = R/2
    EXPECT_DOUBLE_EQ(cfg.clients[1].lr, 5e-4);        // client overrides [clients]
    EXPECT_EQ(cfg.resolved.at("client.1.model"), "h2-small");
    EXPECT_EQ(cfg.resolved.at("federation.align"), "relation");  // default recorded too
}

TEST(JobConfig, CommandLineOverridesFile) {
    JobConfig cfg = parse_job_config(kValidJob, "job.ini",
                                     {{"run.rounds", "9"}, {"run.output", "/tmp/x"}, {"client.1.rank", "4"}});
    EXPECT_EQ(cfg.run.rounds, 9);
    EXPECT_EQ(cfg.run.output, "/tmp/x");
    EXPECT_EQ(cfg.clients[1].effective_rank(32), 4);
}

TEST(JobConfig, ResidualLearningRateDefaultsToTheClientsAndIsValidated) {
    EXPECT_DOUBLE_EQ(parse_job_config(kValidJob, "job.ini").federation.residual_lr, 0.0);  // 0 = the client's lr
    EXPECT_DOUBLE_EQ(parse_job_config(kValidJob, "job.ini", {{"federation.residual_lr", "1e-2"}}).federation.residual_lr,
                     1e-2);
    EXPECT_THROW(parse_job_config(kValidJob, "job.ini", {{"federation.residual_lr", "-1"}}), ConfigError);
}

TEST(JobConfig, ResolvedConfigRoundTripsThroughIni) {
    JobConfig a = parse_job_config(kValidJob, "job.ini");
    JobConfig b = parse_job_config(job_config_to_ini(a), "resolved.ini");
    EXPECT_EQ(a.resolved, b.resolved);
}

TEST(JobConfig, LoadsFromFileAndReportsMissingFile) {
    std::string path = ::testing::TempDir() + "h2tune_job.ini";
    std::ofstream(path) << kValidJob;
    EXPECT_EQ(load_job_config(path).clients.size(), 2u);
    EXPECT_THROW(load_job_config(path + ".missing"), ConfigError);
}

// Every job file under jobs/ (and bench/), so that a new scenario cannot ship with a bad key.
TEST(JobConfig, ShippedJobFilesParse) {
    std::vector<std::string> paths;
    for (const char* dir : {"/jobs", "/bench"})
        for (const auto& entry : std::filesystem::directory_iterator(std::string(H2TUNE_SOURCE_DIR) + dir))
            if (entry.path().extension() == ".ini") paths.push_back(entry.path().string());
    EXPECT_GE(paths.size(), 10u);  // the nine of jobs/ and bench/scale_federated.ini
    for (const auto& path : paths) EXPECT_NO_THROW(load_job_config(path)) << path;
}

// Table of malformed inputs: each must fail with a message naming the problem and its place.
struct BadCase {
    std::string name;
    std::string from, to;                     // textual edit of kValidJob
    std::vector<std::string> fragments;       // expected in the message
};

// Test names and failure messages show the case's name instead of its bytes.
void PrintTo(const BadCase& c, std::ostream* os) { *os << c.name; }

class JobConfigBadInput : public ::testing::TestWithParam<BadCase> {};

TEST_P(JobConfigBadInput, IsRejectedWithLocation) {
    const BadCase& c = GetParam();
    expect_error(replace(kValidJob, c.from, c.to), c.fragments);
}

INSTANTIATE_TEST_SUITE_P(
    Table, JobConfigBadInput,
    ::testing::Values(
        BadCase{"unknown_key", "rounds = 3", "roundz = 3", {"job.ini:5", "unknown key 'run.roundz'"}},
        BadCase{"unknown_client_key", "rank = 8", "rnak = 8", {"job.ini:", "unknown key 'client.0.rnak'"}},
        BadCase{"unknown_section", "[federation]", "[federaton]", {"job.ini:8", "unknown section '[federaton]'"}},
        BadCase{"malformed_section", "[federation]", "[federation", {"job.ini:8", "malformed section"}},
        BadCase{"no_equals", "seed = 7", "seed 7", {"job.ini:6", "expected 'key = value'"}},
        BadCase{"duplicate_key", "seed = 7", "seed = 7\nseed = 8", {"job.ini:7", "duplicate key 'run.seed'"}},
        BadCase{"key_before_section", "# a small", "orphan = 1\n# a small", {"job.ini:1", "before any [section]"}},
        BadCase{"rounds_not_int", "rounds = 3", "rounds = three", {"job.ini:5", "'run.rounds'", "integer"}},
        BadCase{"rounds_zero", "rounds = 3", "rounds = 0", {"'run.rounds'", "[1,"}},
        BadCase{"negative_lr", "lr = 5e-4", "lr = -5e-4", {"job.ini:", "'client.1.lr'", "number in (0"}},
        BadCase{"nan_lr", "lr = 1e-3", "lr = nan", {"'clients.lr'", "finite"}},
        BadCase{"rank_above_R", "rank = 8", "rank = 64", {"'client.0.rank'", "exceeds federation.max_rank"}},
        BadCase{"bad_method", "method = h2tune", "method = fedprox", {"'run.method'", "expected one of"}},
        BadCase{"bad_module", "modules = q,v,up", "modules = q,w", {"'federation.modules'", "unknown module 'w'"}},
        BadCase{"duplicate_module", "modules = q,v,up", "modules = q,q", {"listed twice"}},
        BadCase{"participation_zero", "participation = 0.5", "participation = 0", {"'federation.participation'"}},
        BadCase{"participation_above_one", "participation = 0.5", "participation = 1.5", {"'federation.participation'"}},
        BadCase{"bad_resource", "resource = medium", "resource = huge", {"'client.1.resource'", "low, medium, high"}},
        BadCase{"batch_zero", "batch_size = 8", "batch_size = 0", {"'clients.batch_size'"}},
        BadCase{"no_task", "task = spam\n", "", {"client.0", "either 'task'"}},
        BadCase{"client_gap", "[client.1]", "[client.2]", {"numbered 0..1"}},
        BadCase{"bad_client_index", "[client.1]", "[client.x]", {"unknown section '[client.x]'"}},
        BadCase{"empty_value", "model = h2-tiny", "model =", {"'client.0.model'", "non-empty"}},
        BadCase{"bad_bool", "participation = 0.5", "participation = 0.5\neval_generate = maybe", {"'federation.eval_generate'"}},
        BadCase{"trailing_garbage_int", "seed = 7", "seed = 7x", {"'run.seed'", "integer"}}),
    [](const ::testing::TestParamInfo<BadCase>& case_info) { return case_info.param.name; });

TEST(JobConfig, NoClientsIsAnError) {
    expect_error("[run]\nrounds = 1\n", {"no clients"});
}

TEST(JobConfig, CommandLineErrorsSayCommandLine) {
    expect_error(kValidJob, {"command line", "unknown key 'run.bogus'"}, {{"run.bogus", "1"}});
    expect_error(kValidJob, {"command line", "'run.rounds'"}, {{"run.rounds", "-1"}});
    expect_error(kValidJob, {"command line", "no [client.5]"}, {{"client.5.rank", "4"}});
}

TEST(MethodTable, EveryMethodIsKnownInReportOrderWithItsFamily) {
    const auto& names = known_methods();
    ASSERT_EQ(names.size(), method_table().size());
    EXPECT_EQ(names.front(), "local");
    EXPECT_EQ(method_order("local"), 0);
    EXPECT_LT(method_order("flora"), method_order("h2tune-full-rank"));
    EXPECT_EQ(method_order("fedprox"), static_cast<int>(names.size()));
    for (const auto& m : method_table()) {
        EXPECT_FALSE(m.exchange.empty()) << m.name;
        if (m.family == MethodFamily::kLoraBaseline) {
            EXPECT_TRUE(m.lora.upload_A || m.lora.upload_B) << m.name;
        }
        if (m.family != MethodFamily::kH2Tune) {
            EXPECT_TRUE(m.implies.empty()) << m.name;
        }
    }
    EXPECT_TRUE(method_spec("h2tune-dense").dense);
    EXPECT_TRUE(method_spec("ffa").lora.freeze_A);
    EXPECT_TRUE(method_spec("flora").lora.merge);
    EXPECT_TRUE(method_spec("fedit").lora.groups_by_rank);
    EXPECT_FALSE(method_spec("hetlora").lora.groups_by_rank);
    EXPECT_THROW(method_spec("fedprox"), ConfigError);
}

TEST(MethodTable, AblationsSetWhatTheyImplyAndTheResolvedJobRecordsIt) {
    JobConfig full = parse_job_config(kValidJob, "job.ini", {{"run.method", "h2tune-full-rank"}});
    for (const auto& c : full.clients) EXPECT_EQ(c.rank, 32);
    EXPECT_EQ(full.resolved.at("client.0.rank"), "32");
    EXPECT_EQ(full.resolved.at("client.1.rank"), "32");
    JobConfig depth = parse_job_config(kValidJob, "job.ini", {{"run.method", "h2tune-depth"}, {"federation.align", "end"}});
    EXPECT_EQ(depth.federation.align, "depth");  // the method wins over the job
    EXPECT_EQ(parse_job_config(kValidJob, "job.ini", {{"run.method", "h2tune-joint"}}).resolved.at("federation.alternate"),
              "none");
    JobConfig plain = parse_job_config(kValidJob, "job.ini");
    EXPECT_EQ(plain.clients[0].rank, 8);
    EXPECT_EQ(method_implied_keys("h2tune-full-rank", 2), (std::set<std::string>{"client.0.rank", "client.1.rank"}));
    EXPECT_EQ(method_implied_keys("h2tune-end", 2), (std::set<std::string>{"federation.align"}));
    EXPECT_TRUE(method_implied_keys("fedit", 2).empty());
}

TEST(JobConfig, AcceptsAByteOrderMarkAndSpacesInsideSectionHeaders) {
    const JobConfig plain = parse_job_config(kValidJob, "job.ini");
    const JobConfig bom = parse_job_config("\xEF\xBB\xBF" + std::string(kValidJob), "job.ini");
    EXPECT_EQ(bom.resolved, plain.resolved);
    const JobConfig spaced =
        parse_job_config(replace(replace(kValidJob, "[client.0]", "[ client.0 ]"), "[run]", "[run ]  # comment"), "job.ini");
    EXPECT_EQ(spaced.resolved, plain.resolved);
    // Line numbers still point at the right line after the headers are normalised.
    expect_error(replace(kValidJob, "[client.0]", "[ client.0 ]\ncolour = blue"), {"job.ini:18: unknown key 'client.0.colour'"});
}

TEST(JobConfig, RefusesJobFilesThatAreNotRegularFiles) {
    const std::string dir = ::testing::TempDir();
    try {
        load_job_config(dir);
        FAIL() << "a directory was accepted";
    } catch (const ConfigError& e) {
        EXPECT_NE(std::string(e.what()).find("is a directory"), std::string::npos) << e.what();
    }
    try {
        load_job_config("/dev/zero");  // would otherwise be read until memory runs out
        FAIL() << "/dev/zero was accepted";
    } catch (const ConfigError& e) {
        EXPECT_NE(std::string(e.what()).find("/dev/zero: not a regular file"), std::string::npos) << e.what();
    }
}

TEST(JobConfig, ActivationCheckpointingAndSharedBasesKeys) {
    const std::string job = R"([run]
name = t
[clients]
activation_checkpointing = true
[client.0]
task = spam
[client.1]
task = spam
activation_checkpointing = off
)";
    const JobConfig cfg = parse_job_config(job, "job.ini");
    ASSERT_EQ(cfg.clients.size(), 2u);
    EXPECT_TRUE(cfg.clients[0].activation_checkpointing);
    EXPECT_FALSE(cfg.clients[1].activation_checkpointing);
    EXPECT_EQ(cfg.resolved.at("client.0.activation_checkpointing"), "true");
    EXPECT_FALSE(parse_job_config("[client.0]\ntask = spam\n", "job.ini").clients[0].activation_checkpointing);
    try {
        parse_job_config(job, "job.ini", {{"client.1.activation_checkpointing", "maybe"}});
        FAIL() << "expected ConfigError";
    } catch (const ConfigError& e) {
        EXPECT_NE(std::string(e.what()).find("activation_checkpointing"), std::string::npos) << e.what();
    }
    EXPECT_TRUE(cfg.run.share_base_models);
    EXPECT_FALSE(parse_job_config(job, "job.ini", {{"run.share_base_models", "false"}}).run.share_base_models);
    EXPECT_EQ(cfg.resolved.at("run.share_base_models"), "true");
}
