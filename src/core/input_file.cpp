#include "h2tune/core/input_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "h2tune/core/error.h"

namespace h2tune {

namespace {

[[noreturn]] void fail(InputErrorKind kind, const std::string& message) {
    switch (kind) {
        case InputErrorKind::kConfig: throw ConfigError(message);
        case InputErrorKind::kData: throw DataError(message);
        case InputErrorKind::kModel: throw ModelError(message);
        case InputErrorKind::kIo: break;
    }
    throw IoError(message);
}

}  // namespace

InputFile::InputFile(const std::string& path, const InputFileRule& rule, InputErrorKind kind)
    : path_(path), kind_(kind) {
    // O_NONBLOCK: opening a FIFO for reading must not wait for a writer.
    fd_ = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd_ < 0) fail(kind, path + ": cannot open " + rule.what + ": " + std::strerror(errno));
    struct stat st {};
    if (::fstat(fd_, &st) != 0) {
        const std::string why = std::strerror(errno);
        ::close(fd_);
        fail(kind, path + ": cannot stat " + rule.what + ": " + why);
    }
    std::string problem;
    if (S_ISDIR(st.st_mode)) problem = path + ": is a directory, not a " + rule.what;
    else if (!S_ISREG(st.st_mode)) problem = path + ": not a regular file (a FIFO, socket or device); give the " + rule.what + " itself";
    else if (static_cast<std::uint64_t>(st.st_size) > rule.max_bytes)
        problem = path + ": " + byte_size_text(static_cast<std::uint64_t>(st.st_size)) + "; a " + rule.what +
                  " may have at most " + byte_size_text(rule.max_bytes);
    if (!problem.empty()) {
        ::close(fd_);
        fail(kind, problem);
    }
    size_ = static_cast<std::uint64_t>(st.st_size);
    // Regular files never block; reads are plain blocking reads.
    const int flags = ::fcntl(fd_, F_GETFL);
    if (flags >= 0) ::fcntl(fd_, F_SETFL, flags & ~O_NONBLOCK);
}

InputFile::~InputFile() { ::close(fd_); }

std::uint64_t InputFile::read_some(std::uint64_t offset, void* out, std::uint64_t n) const {
    for (;;) {
        const ssize_t got = ::pread(fd_, out, n, static_cast<off_t>(offset));
        if (got >= 0) return static_cast<std::uint64_t>(got);
        if (errno != EINTR) fail(kind_, path_ + ": read failed: " + std::strerror(errno));
    }
}

void InputFile::read_at(std::uint64_t offset, void* out, std::uint64_t n) const {
    char* p = static_cast<char*>(out);
    while (n > 0) {
        const std::uint64_t got = read_some(offset, p, n);
        if (got == 0) fail(kind_, path_ + ": unexpected end of file (truncated while reading?)");
        p += got;
        offset += got;
        n -= got;
    }
}

std::uint64_t check_input_file(const std::string& path, const InputFileRule& rule, InputErrorKind kind) {
    return InputFile(path, rule, kind).size();
}

std::string read_input_file(const std::string& path, const InputFileRule& rule, InputErrorKind kind) {
    const InputFile file(path, rule, kind);
    std::string text;
    text.reserve(file.size());
    char buffer[1 << 16];
    // To the end of the file, not its size at opening: one that grew past the limit is refused.
    for (std::uint64_t got; (got = file.read_some(text.size(), buffer, sizeof buffer)) > 0;) {
        if (text.size() + got > rule.max_bytes)
            fail(kind, path + ": grew past " + byte_size_text(rule.max_bytes) + " while being read; a " + rule.what +
                           " may have at most that");
        text.append(buffer, static_cast<std::size_t>(got));
    }
    return text;
}

std::uint64_t memory_fraction_bytes(double fraction) {
    const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGESIZE);
    constexpr std::uint64_t kFloor = 1u << 20;
    if (pages <= 0 || page <= 0) return 8ull << 30;  // unknown machine: a modest node's share
    const double bytes = static_cast<double>(pages) * static_cast<double>(page) * fraction;
    return bytes < static_cast<double>(kFloor) ? kFloor : static_cast<std::uint64_t>(bytes);
}

int json_nesting_depth(std::string_view text) {
    int depth = 0, deepest = 0;
    bool in_string = false, escaped = false;
    for (const char c : text) {
        if (in_string) {
            if (escaped) escaped = false;
            else if (c == '\\') escaped = true;
            else if (c == '"') in_string = false;
        } else if (c == '"') {
            in_string = true;
        } else if (c == '[' || c == '{') {
            deepest = std::max(deepest, ++depth);
        } else if (c == ']' || c == '}') {
            --depth;
        }
    }
    return deepest;
}

std::string byte_size_text(std::uint64_t bytes) {
    static const char* const kUnits[] = {"bytes", "KiB", "MiB", "GiB", "TiB", "PiB"};
    double value = static_cast<double>(bytes);
    int unit = 0;
    while (value >= 1024.0 && unit < 5) {
        value /= 1024.0;
        ++unit;
    }
    char text[48];
    if (unit == 0) std::snprintf(text, sizeof text, "%llu bytes", static_cast<unsigned long long>(bytes));
    else if (value == static_cast<double>(static_cast<std::uint64_t>(value))) std::snprintf(text, sizeof text, "%.0f %s", value, kUnits[unit]);
    else std::snprintf(text, sizeof text, "%.1f %s", value, kUnits[unit]);
    return text;
}

}  // namespace h2tune
