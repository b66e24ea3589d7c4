// The on-disk checkpoint protocol (io/checkpoint_dir.h): commit markers, verification, pruning.
#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "h2tune/core/error.h"
#include "h2tune/io/checkpoint_dir.h"

using namespace h2tune;
namespace fs = std::filesystem;

namespace {

struct TempDir {
    fs::path path;
    TempDir() {
        path = fs::temp_directory_path() / ("h2tune_ckpt_test_" + std::to_string(::getpid()));
        fs::remove_all(path);
        fs::create_directories(path);
    }
    ~TempDir() { fs::remove_all(path); }
};

void write_text(const fs::path& p, const std::string& text) {
    std::ofstream(p, std::ios::trunc) << text;
}

// A committed checkpoint with two files.
CheckpointInfo make_checkpoint(const fs::path& root, int64_t next_round, bool in_progress) {
    CheckpointInfo info;
    info.dir = (root / checkpoint_name(next_round, in_progress)).string();
    info.next_round = next_round;
    info.in_progress = in_progress;
    fs::create_directories(info.dir);
    write_text(fs::path(info.dir) / "server.h5", "server state " + std::to_string(next_round));
    write_text(fs::path(info.dir) / "client_0000.h5", std::string(1000, 'c'));
    info.files = {describe_file(info.dir, "server.h5"), describe_file(info.dir, "client_0000.h5")};
    write_commit(info);
    return info;
}

}  // namespace

TEST(CheckpointDir, NamesSortInTheOrderCheckpointsAreTaken) {
    EXPECT_EQ(checkpoint_name(3, false), "r000003.0");
    EXPECT_EQ(checkpoint_name(3, true), "r000003.1");
    EXPECT_LT(checkpoint_name(3, false), checkpoint_name(3, true));
    EXPECT_LT(checkpoint_name(3, true), checkpoint_name(4, false));
}

TEST(CheckpointDir, ListsOnlyCommittedCheckpointsNewestFirst) {
    TempDir t;
    make_checkpoint(t.path, 1, false);
    make_checkpoint(t.path, 2, true);
    make_checkpoint(t.path, 2, false);
    fs::create_directories(t.path / checkpoint_name(3, false));  // files written, no COMMIT yet
    write_text(t.path / checkpoint_name(3, false) / "server.h5", "x");
    const auto all = list_checkpoints(t.path.string());
    ASSERT_EQ(all.size(), 3u);
    EXPECT_EQ(all[0].next_round, 2);
    EXPECT_TRUE(all[0].in_progress);
    EXPECT_EQ(all[1].next_round, 2);
    EXPECT_FALSE(all[1].in_progress);
    EXPECT_EQ(all[2].next_round, 1);
    EXPECT_EQ(all[0].files.size(), 2u);
    EXPECT_EQ(verify_checkpoint(all[0]), "");
}

TEST(CheckpointDir, VerificationDetectsTruncatedCorruptedAndMissingFiles) {
    TempDir t;
    const CheckpointInfo c = make_checkpoint(t.path, 1, false);
    const fs::path client = fs::path(c.dir) / "client_0000.h5";
    fs::resize_file(client, 500);
    EXPECT_NE(verify_checkpoint(list_checkpoints(t.path.string())[0]).find("COMMIT recorded 1000"), std::string::npos);
    write_text(client, std::string(999, 'c') + "d");  // same size, one byte different
    EXPECT_NE(verify_checkpoint(list_checkpoints(t.path.string())[0]).find("checksum"), std::string::npos);
    fs::remove(client);
    EXPECT_NE(verify_checkpoint(list_checkpoints(t.path.string())[0]).find("missing"), std::string::npos);
}

TEST(CheckpointDir, ACutShortCommitMarkerDoesNotCount) {
    TempDir t;
    const CheckpointInfo c = make_checkpoint(t.path, 1, false);
    const fs::path commit = fs::path(c.dir) / "COMMIT";
    std::ifstream in(commit);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    write_text(commit, text.substr(0, text.size() - 4));  // "end" line lost
    EXPECT_TRUE(list_checkpoints(t.path.string()).empty());
}

// COMMIT is read strictly now: istream parsing took "file -5 ..." as a size of 2^64 - 5 and
// "next_round -3" as a round, and a listed name such as "/etc/passwd" or "../x" was later read
// (checksummed) outside the checkpoint.
TEST(CheckpointDir, CommitMarkersAreParsedStrictly) {
    const std::string head = "h2tune-checkpoint 1\nnext_round 3\nin_progress 1\n";
    const CheckpointInfo ok =
        parse_commit(head + "file 10 99 server.h5\nfile 0 1 sub/client 0001.h5\nend\n", "/ckpt/r000003.1", "COMMIT");
    EXPECT_EQ(ok.dir, "/ckpt/r000003.1");
    EXPECT_EQ(ok.next_round, 3);
    EXPECT_TRUE(ok.in_progress);
    ASSERT_EQ(ok.files.size(), 2u);
    EXPECT_EQ(ok.files[1].name, "sub/client 0001.h5");
    EXPECT_EQ(ok.files[0].size, 10u);
    EXPECT_EQ(ok.files[0].checksum, 99u);

    const auto refused = [&](const std::string& text, const std::string& message) {
        try {
            parse_commit(text, "/ckpt", "ckpt/COMMIT");
            ADD_FAILURE() << "accepted: " << text;
        } catch (const IoError& e) {
            EXPECT_NE(std::string(e.what()).find(message), std::string::npos) << e.what();
        }
    };
    refused(head + "file -5 99 server.h5\nend\n", "ckpt/COMMIT:4: expected 'file <size> <checksum> <name>'");
    refused(head + "file 18446744073709551616 99 server.h5\nend\n", "expected 'file");
    refused(head + "file 10 99 /etc/passwd\nend\n", "'/etc/passwd' is not a relative path inside the checkpoint");
    refused(head + "file 10 99 ../r000001.0/server.h5\nend\n", "is not a relative path inside");
    refused(head + "file 10 99 \nend\n", "is not a relative path inside");
    refused("h2tune-checkpoint 1\nnext_round -3\nend\n", "ckpt/COMMIT:2: bad next_round '-3'");
    refused("h2tune-checkpoint 1\nnext_round 3\nin_progress 2\nend\n", "in_progress must be 0 or 1");
    refused(head + "colour blue\nend\n", "unknown line 'colour blue'");
    refused(head, "cut short");
    refused("h2tune-checkpoint 2\nend\n", "not a checkpoint commit marker");
    refused("h2tune-checkpoint 1\nend\n", "no next_round");

    // list_checkpoints still skips such a directory rather than failing the resume.
    TempDir t;
    const CheckpointInfo c = make_checkpoint(t.path, 1, false);
    write_text(fs::path(c.dir) / "COMMIT", head + "file 10 99 /etc/passwd\nend\n");
    EXPECT_TRUE(list_checkpoints(t.path.string()).empty());
}

TEST(CheckpointDir, PruningKeepsTheNewestAndWritesInFlight) {
    TempDir t;
    for (int r = 1; r <= 4; ++r) make_checkpoint(t.path, r, false);
    fs::create_directories(t.path / checkpoint_name(0, true));  // stale, uncommitted, old
    fs::create_directories(t.path / checkpoint_name(5, false));  // in flight, newer than any commit
    prune_checkpoints(t.path.string(), 2);
    EXPECT_FALSE(fs::exists(t.path / checkpoint_name(1, false)));
    EXPECT_FALSE(fs::exists(t.path / checkpoint_name(2, false)));
    EXPECT_TRUE(fs::exists(t.path / checkpoint_name(3, false)));
    EXPECT_TRUE(fs::exists(t.path / checkpoint_name(4, false)));
    EXPECT_FALSE(fs::exists(t.path / checkpoint_name(0, true)));
    EXPECT_TRUE(fs::exists(t.path / checkpoint_name(5, false)));
}

TEST(CheckpointDir, PublishReplacesTheTargetWhole) {
    TempDir t;
    write_text(t.path / "f", "old");
    write_text(t.path / "f.tmp", "new contents");
    publish_file((t.path / "f.tmp").string(), (t.path / "f").string());
    std::ifstream in(t.path / "f");
    std::string s;
    std::getline(in, s);
    EXPECT_EQ(s, "new contents");
    EXPECT_FALSE(fs::exists(t.path / "f.tmp"));
}
