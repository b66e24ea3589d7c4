#include "h2tune/io/checkpoint_dir.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "h2tune/core/error.h"

namespace fs = std::filesystem;

namespace h2tune {

namespace {

constexpr const char* kCommitName = "COMMIT";
constexpr const char* kCommitMagic = "h2tune-checkpoint 1";

void fsync_path(const std::string& path, bool directory) {
    const int fd = ::open(path.c_str(), directory ? O_RDONLY | O_DIRECTORY : O_RDONLY);
    if (fd < 0) throw IoError(path + ": cannot open for fsync: " + std::strerror(errno));
    const int rc = ::fsync(fd);
    const int err = errno;
    ::close(fd);
    if (rc != 0) throw IoError(path + ": fsync failed: " + std::strerror(err));
}

}  // namespace

std::string checkpoint_name(int64_t next_round, bool in_progress) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "r%06lld.%d", static_cast<long long>(next_round), in_progress ? 1 : 0);
    return buf;
}

uint64_t file_checksum(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw IoError(path + ": cannot open to checksum");
    uint64_t h = 1469598103934665603ULL;
    std::vector<char> buf(1 << 16);
    while (in) {
        in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
        const std::streamsize n = in.gcount();
        for (std::streamsize i = 0; i < n; ++i) {
            h ^= static_cast<unsigned char>(buf[static_cast<size_t>(i)]);
            h *= 1099511628211ULL;
        }
    }
    return h;
}

CheckpointFile describe_file(const std::string& dir, const std::string& name) {
    const std::string path = (fs::path(dir) / name).string();
    std::error_code ec;
    const auto size = fs::file_size(path, ec);
    if (ec) throw IoError(path + ": " + ec.message());
    return CheckpointFile{name, static_cast<uint64_t>(size), file_checksum(path)};
}

void publish_file(const std::string& tmp, const std::string& final_path) {
    fsync_path(tmp, false);
    if (std::rename(tmp.c_str(), final_path.c_str()) != 0)
        throw IoError(final_path + ": cannot rename " + tmp + " into place: " + std::strerror(errno));
    const fs::path parent = fs::path(final_path).parent_path();
    fsync_path(parent.empty() ? "." : parent.string(), true);
}

void copy_file_atomically(const std::string& from, const std::string& to) {
    const std::string tmp = to + ".tmp";
    std::error_code ec;
    fs::copy_file(from, tmp, fs::copy_options::overwrite_existing, ec);
    if (ec) throw IoError(to + ": cannot copy from " + from + ": " + ec.message());
    publish_file(tmp, to);
}

void write_commit(const CheckpointInfo& info) {
    const std::string path = (fs::path(info.dir) / kCommitName).string(), tmp = path + ".tmp";
    {
        std::ofstream out(tmp, std::ios::trunc);
        out << kCommitMagic << "\n"
            << "next_round " << info.next_round << "\n"
            << "in_progress " << (info.in_progress ? 1 : 0) << "\n";
        for (const auto& f : info.files) out << "file " << f.size << " " << f.checksum << " " << f.name << "\n";
        out << "end\n";
        if (!out.flush()) throw IoError(tmp + ": cannot write the commit marker");
    }
    publish_file(tmp, path);
}

namespace {
// Parses COMMIT; false when it is missing, cut short or malformed.
bool read_commit(const fs::path& dir, CheckpointInfo* info) {
    std::ifstream in(dir / kCommitName);
    if (!in) return false;
    std::string line;
    if (!std::getline(in, line) || line != kCommitMagic) return false;
    info->dir = dir.string();
    bool ended = false, have_round = false;
    while (std::getline(in, line)) {
        std::istringstream ls(line);
        std::string key;
        ls >> key;
        if (key == "next_round") {
            have_round = static_cast<bool>(ls >> info->next_round);
        } else if (key == "in_progress") {
            int v = 0;
            ls >> v;
            info->in_progress = v != 0;
        } else if (key == "file") {
            CheckpointFile f;
            ls >> f.size >> f.checksum;
            std::getline(ls >> std::ws, f.name);
            if (!ls && f.name.empty()) return false;
            info->files.push_back(f);
        } else if (key == "end") {
            ended = true;
        }
    }
    return ended && have_round;
}
}  // namespace

std::vector<CheckpointInfo> list_checkpoints(const std::string& root) {
    std::vector<CheckpointInfo> out;
    std::error_code ec;
    if (!fs::is_directory(root, ec)) return out;
    for (const auto& entry : fs::directory_iterator(root, ec)) {
        if (!entry.is_directory()) continue;
        CheckpointInfo info;
        if (read_commit(entry.path(), &info)) out.push_back(info);
    }
    std::sort(out.begin(), out.end(), [](const CheckpointInfo& a, const CheckpointInfo& b) {
        return std::make_pair(a.next_round, a.in_progress) > std::make_pair(b.next_round, b.in_progress);
    });
    return out;
}

std::string verify_checkpoint(const CheckpointInfo& info) {
    if (info.files.empty()) return "COMMIT lists no files";
    for (const auto& f : info.files) {
        const fs::path path = fs::path(info.dir) / f.name;
        std::error_code ec;
        const auto size = fs::file_size(path, ec);
        if (ec) return path.string() + ": missing (" + ec.message() + ")";
        if (static_cast<uint64_t>(size) != f.size)
            return path.string() + ": " + std::to_string(size) + " bytes, COMMIT recorded " + std::to_string(f.size);
        if (file_checksum(path.string()) != f.checksum) return path.string() + ": checksum differs from COMMIT";
    }
    return "";
}

void prune_checkpoints(const std::string& root, int keep) {
    const auto committed = list_checkpoints(root);
    std::vector<std::string> keep_dirs;
    for (size_t i = 0; i < committed.size() && static_cast<int>(i) < keep; ++i) keep_dirs.push_back(committed[i].dir);
    const std::string newest = committed.empty() ? "" : fs::path(committed.front().dir).filename().string();
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator(root, ec)) {
        if (!entry.is_directory()) continue;
        const std::string dir = entry.path().string();
        if (std::find(keep_dirs.begin(), keep_dirs.end(), dir) != keep_dirs.end()) continue;
        // Uncommitted directories newer than the newest commit may be a write in flight elsewhere.
        const bool is_committed = std::any_of(committed.begin(), committed.end(),
                                              [&](const CheckpointInfo& c) { return c.dir == dir; });
        if (!is_committed && entry.path().filename().string() > newest) continue;
        fs::remove_all(entry.path(), ec);
    }
}

}  // namespace h2tune
