// The on-disk protocol of checkpoints: OUTPUT/checkpoints/<name>/ holds one
// file per client (written by the rank hosting it), server.h5 and a copy of metrics.h5 (rank 0),
// and COMMIT, written last by rank 0 once every rank has published its files. Every file is
// written under a temporary name, fsynced and renamed into place; COMMIT lists each file's size
// and FNV-1a checksum, so a truncated or corrupted checkpoint is detected and skipped. Only
// committed, verified checkpoints count.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace h2tune {

struct CheckpointFile {
    std::string name;    // relative to the checkpoint directory
    uint64_t size = 0;
    uint64_t checksum = 0;  // FNV-1a 64 of the bytes
};

struct CheckpointInfo {
    std::string dir;        // path of the checkpoint directory
    int64_t next_round = 0;  // the round a resumed run starts (or continues)
    bool in_progress = false;  // taken inside round `next_round` (on a signal)
    std::vector<CheckpointFile> files;
};

// "r000003.0": before round 3; "r000003.1": inside round 3. Sorts in the order they were taken.
std::string checkpoint_name(int64_t next_round, bool in_progress);

uint64_t file_checksum(const std::string& path);
CheckpointFile describe_file(const std::string& dir, const std::string& name);
// fsync(tmp), rename(tmp, final), fsync(the parent directory): after it, `final` is either the
// old file or the complete new one, whatever crashes.
void publish_file(const std::string& tmp, const std::string& final_path);
// Copies `from` to `to` through a temporary name and publish_file.
void copy_file_atomically(const std::string& from, const std::string& to);

// Writes COMMIT into info.dir (atomically, last).
void write_commit(const CheckpointInfo& info);
// Parses the text of the COMMIT file of checkpoint directory `dir` (recorded in the result's
// dir); `source` names the file in errors. Throws IoError when the text is cut short (no "end"),
// malformed (a negative or non-numeric number, an unknown line) or lists a file that is not a
// relative path inside the directory ("/etc/passwd", "../x").
CheckpointInfo parse_commit(const std::string& text, const std::string& dir, const std::string& source);
// Committed checkpoints under `root` (OUTPUT/checkpoints), newest first. Directories without a
// COMMIT are ignored (a write that never finished); those whose COMMIT does not parse are too,
// and `unreadable` (if given) receives why, newest first.
std::vector<CheckpointInfo> list_checkpoints(const std::string& root, std::vector<std::string>* unreadable = nullptr);
// Empty when every listed file exists with its recorded size and checksum, else the reason.
std::string verify_checkpoint(const CheckpointInfo& info);
// Removes all but the newest `keep` committed checkpoints and every uncommitted directory older
// than the newest committed one.
void prune_checkpoints(const std::string& root, int keep);

}  // namespace h2tune
