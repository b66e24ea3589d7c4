#include "h2tune/io/checkpoint_dir.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "h2tune/core/error.h"
#include "h2tune/core/fnv1a.h"
#include "h2tune/core/input_file.h"

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
    Fnv1a64 hash;
    std::vector<char> buf(1 << 16);
    while (in) {
        in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
        hash.add(buf.data(), static_cast<size_t>(in.gcount()));
    }
    return hash.value;
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

// A decimal number without sign, spaces or overflow (istream >> uint64_t accepts "-5" as 2^64-5).
bool parse_unsigned(const std::string& text, uint64_t max, uint64_t& out) {
    if (text.empty() || text.size() > 20) return false;
    uint64_t v = 0;
    for (char c : text) {
        if (c < '0' || c > '9') return false;
        const auto digit = static_cast<uint64_t>(c - '0');
        if (v > (max - digit) / 10) return false;
        v = v * 10 + digit;
    }
    out = v;
    return true;
}

// A file a COMMIT may list: a plain relative path inside the checkpoint directory, so that
// verification and resumption never read (or trust) anything outside it.
bool is_inside_name(const std::string& name) {
    if (name.empty() || name.front() == '/' || name.find('\0') != std::string::npos) return false;
    for (const auto& part : fs::path(name))
        if (part == ".." || part == ".") return false;
    return true;
}

}  // namespace

CheckpointInfo parse_commit(const std::string& text, const std::string& dir, const std::string& source) {
    std::vector<std::string> lines;
    for (std::size_t begin = 0; begin < text.size();) {
        std::size_t end = text.find('\n', begin);
        if (end == std::string::npos) end = text.size();
        lines.push_back(text.substr(begin, end - begin));
        begin = end + 1;
    }
    const auto fail = [&](std::size_t index, const std::string& why) -> void {
        throw IoError(error_at(source, static_cast<long>(index + 1), why));
    };
    if (lines.empty() || lines[0] != kCommitMagic)
        throw IoError(source + ": not a checkpoint commit marker (first line is not '" + kCommitMagic + "')");
    CheckpointInfo info;
    info.dir = dir;
    bool ended = false, have_round = false;
    for (std::size_t i = 1; i < lines.size() && !ended; ++i) {
        const std::string& line = lines[i];
        const std::size_t space = line.find(' ');
        const std::string key = line.substr(0, space), rest = space == std::string::npos ? "" : line.substr(space + 1);
        uint64_t value = 0;
        if (key == "next_round") {
            if (!parse_unsigned(rest, static_cast<uint64_t>(INT64_MAX), value)) fail(i, "bad next_round '" + rest + "'");
            info.next_round = static_cast<int64_t>(value);
            have_round = true;
        } else if (key == "in_progress") {
            if (rest != "0" && rest != "1") fail(i, "in_progress must be 0 or 1, not '" + rest + "'");
            info.in_progress = rest == "1";
        } else if (key == "file") {
            // "file <size> <checksum> <name>": the name is the rest of the line and may hold spaces.
            const std::size_t a = rest.find(' ');
            const std::size_t b = a == std::string::npos ? a : rest.find(' ', a + 1);
            CheckpointFile f;
            if (b == std::string::npos || !parse_unsigned(rest.substr(0, a), UINT64_MAX, f.size) ||
                !parse_unsigned(rest.substr(a + 1, b - a - 1), UINT64_MAX, f.checksum))
                fail(i, "expected 'file <size> <checksum> <name>'");
            f.name = rest.substr(b + 1);
            if (!is_inside_name(f.name)) fail(i, "file name '" + f.name + "' is not a relative path inside the checkpoint");
            info.files.push_back(std::move(f));
        } else if (key == "end") {
            ended = true;
        } else if (!line.empty()) {
            fail(i, "unknown line '" + line.substr(0, 80) + "'");
        }
    }
    if (!ended) throw IoError(source + ": cut short (no 'end' line)");
    if (!have_round) throw IoError(source + ": no next_round line");
    return info;
}

namespace {
// Reads COMMIT; false when it is missing (a write that never finished) or, with `why` set, cut
// short or malformed.
bool read_commit(const fs::path& dir, CheckpointInfo* info, std::string* why) {
    const std::string path = (dir / kCommitName).string();
    std::error_code ec;
    if (!fs::exists(path, ec)) return false;
    try {
        const InputFileRule rule{"checkpoint COMMIT file", 4ull << 20};
        *info = parse_commit(read_input_file(path, rule, InputErrorKind::kIo), dir.string(), path);
        return true;
    } catch (const Error& e) {
        *why = e.what();
        return false;
    }
}
}  // namespace

std::vector<CheckpointInfo> list_checkpoints(const std::string& root, std::vector<std::string>* unreadable) {
    std::vector<CheckpointInfo> out;
    std::vector<std::pair<std::string, std::string>> rejected;  // (directory, why)
    std::error_code ec;
    if (!fs::is_directory(root, ec)) return out;
    for (const auto& entry : fs::directory_iterator(root, ec)) {
        if (!entry.is_directory()) continue;
        CheckpointInfo info;
        std::string why;
        if (read_commit(entry.path(), &info, &why)) out.push_back(info);
        else if (!why.empty()) rejected.emplace_back(entry.path().filename().string(), why);
    }
    if (unreadable) {
        std::sort(rejected.rbegin(), rejected.rend());  // names sort in the order taken: newest first
        for (auto& r : rejected) unreadable->push_back(std::move(r.second));
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
