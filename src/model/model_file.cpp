#include "model_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "h2tune/core/error.h"
#include "h2tune/core/input_file.h"

namespace h2tune::model_file {

namespace {

std::string errno_text() { return std::strerror(errno); }

std::string parent_dir(const std::string& path) {
    const auto slash = path.find_last_of('/');
    if (slash == std::string::npos) return ".";
    if (slash == 0) return "/";
    return path.substr(0, slash);
}

// Loops because write(2) may write less than asked (signals, pipes, quotas).
void write_all(int fd, const void* data, std::size_t size, const std::string& path) {
    const char* p = static_cast<const char*>(data);
    while (size > 0) {
        const ssize_t n = ::write(fd, p, size);
        if (n < 0) {
            if (errno == EINTR) continue;
            throw IoError(path + ": write failed: " + errno_text());
        }
        p += n;
        size -= static_cast<std::size_t>(n);
    }
}

}  // namespace

void write_atomic(const std::string& path, const std::vector<Chunk>& chunks) {
    const std::string tmp = path + ".tmp." + std::to_string(::getpid());
    const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) throw IoError(tmp + ": cannot create: " + errno_text());
    try {
        for (const auto& c : chunks) write_all(fd, c.data, c.size, tmp);
        if (::fsync(fd) != 0) throw IoError(tmp + ": fsync failed: " + errno_text());
    } catch (...) {
        ::close(fd);
        ::unlink(tmp.c_str());
        throw;
    }
    if (::close(fd) != 0) {
        ::unlink(tmp.c_str());
        throw IoError(tmp + ": close failed: " + errno_text());
    }
    if (::rename(tmp.c_str(), path.c_str()) != 0) {
        const std::string why = errno_text();
        ::unlink(tmp.c_str());
        throw IoError(path + ": cannot rename " + tmp + " into place: " + why);
    }
    // The rename is durable only once the directory entry is on disk.
    const int dfd = ::open(parent_dir(path).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        ::fsync(dfd);
        ::close(dfd);
    }
}

std::string read_text(const std::string& path) {
    // Small JSON files of a model directory (a shard index is ~100 KB for a 70B model).
    return read_input_file(path, InputFileRule{"model file", 64u << 20}, InputErrorKind::kModel);
}

bool exists(const std::string& path) {
    struct stat st {};
    return ::stat(path.c_str(), &st) == 0;
}

}  // namespace h2tune::model_file
