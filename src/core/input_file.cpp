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

// Owns a descriptor opened without blocking: opening a FIFO for reading must not wait for a writer.
class InputDescriptor {
public:
    InputDescriptor(const std::string& path, const InputFileRule& rule, InputErrorKind kind) {
        fd_ = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
        if (fd_ < 0) fail(kind, path + ": cannot open " + rule.what + ": " + std::strerror(errno));
        struct stat st {};
        if (::fstat(fd_, &st) != 0) fail(kind, path + ": cannot stat " + rule.what + ": " + std::strerror(errno));
        if (S_ISDIR(st.st_mode)) fail(kind, path + ": is a directory, not a " + rule.what);
        if (!S_ISREG(st.st_mode))
            fail(kind, path + ": not a regular file (a FIFO, socket or device); give the " + rule.what + " itself");
        size_ = static_cast<std::uint64_t>(st.st_size);
        if (size_ > rule.max_bytes)
            fail(kind, path + ": " + byte_size_text(size_) + "; a " + rule.what + " may have at most " +
                           byte_size_text(rule.max_bytes));
        // Regular files never block; reads below are plain blocking reads.
        const int flags = ::fcntl(fd_, F_GETFL);
        if (flags >= 0) ::fcntl(fd_, F_SETFL, flags & ~O_NONBLOCK);
    }
    ~InputDescriptor() {
        if (fd_ >= 0) ::close(fd_);
    }
    InputDescriptor(const InputDescriptor&) = delete;
    InputDescriptor& operator=(const InputDescriptor&) = delete;

    int fd() const { return fd_; }
    std::uint64_t size() const { return size_; }

private:
    int fd_ = -1;
    std::uint64_t size_ = 0;
};

}  // namespace

std::uint64_t check_input_file(const std::string& path, const InputFileRule& rule, InputErrorKind kind) {
    return InputDescriptor(path, rule, kind).size();
}

std::string read_input_file(const std::string& path, const InputFileRule& rule, InputErrorKind kind) {
    const InputDescriptor file(path, rule, kind);
    std::string text;
    text.reserve(file.size());
    char buffer[1 << 16];
    for (;;) {
        const ssize_t got = ::read(file.fd(), buffer, sizeof buffer);
        if (got < 0) {
            if (errno == EINTR) continue;
            fail(kind, path + ": cannot read " + rule.what + ": " + std::strerror(errno));
        }
        if (got == 0) break;
        if (text.size() + static_cast<std::uint64_t>(got) > rule.max_bytes)
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
