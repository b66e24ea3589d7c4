// Reading input files that other tools and other people produced. Only a regular file is read (a
// FIFO would block for ever and ignore SIGTERM, /dev/zero never ends), and only up to a size
// limit checked before a byte is read, so a wrong path costs an error line, not a hung job or an
// exhausted node. The error names the file, what it was meant to be and the limit.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace h2tune {

// What an input file is for (in messages: "<path>: not a regular file ...; give the <what>") and
// the most bytes it may have.
struct InputFileRule {
    std::string what;        // "job file", "training file", "config.json", ...
    std::uint64_t max_bytes;
};

// Which exception an input-file problem becomes (the caller's component decides).
enum class InputErrorKind { kConfig, kData, kModel, kIo };

// A regular input file within the rule's limit, open for reads at offsets: for formats read in
// pieces (a safetensors header, then each tensor where the header puts it) and for sampling.
// Opening never blocks (a FIFO is refused, not waited on). Errors are of the given kind and name
// the file.
class InputFile {
public:
    InputFile(const std::string& path, const InputFileRule& rule, InputErrorKind kind);
    ~InputFile();
    InputFile(const InputFile&) = delete;
    InputFile& operator=(const InputFile&) = delete;

    const std::string& path() const { return path_; }
    std::uint64_t size() const { return size_; }  // at opening
    // Exactly `n` bytes at `offset`; a file that ends first is an error ("truncated while reading?").
    void read_at(std::uint64_t offset, void* out, std::uint64_t n) const;
    // Up to `n` bytes at `offset`; 0 at the end of the file.
    std::uint64_t read_some(std::uint64_t offset, void* out, std::uint64_t n) const;

private:
    std::string path_;
    InputErrorKind kind_;
    int fd_ = -1;
    std::uint64_t size_ = 0;
};

// Checks that `path` names a regular file within the rule's limit and returns its size.
std::uint64_t check_input_file(const std::string& path, const InputFileRule& rule, InputErrorKind kind);

// The whole file, after the same checks; a file that grows past the limit while being read is
// refused too.
std::string read_input_file(const std::string& path, const InputFileRule& rule, InputErrorKind kind);

// A limit derived from the machine: `fraction` of its physical memory (at least 1 MiB), for
// inputs such as training data whose plausible size scales with the node.
std::uint64_t memory_fraction_bytes(double fraction);

// The deepest nesting of arrays and objects in JSON `text` (string contents skipped). Checked
// before parsing untrusted JSON files: nlohmann's dump() and the component readers recurse once per
// level, so a few MB of '[' would overflow the stack. For text that parses the count is exact.
int json_nesting_depth(std::string_view text);

// "4 MiB", "1.5 GiB": a byte count as people read it.
std::string byte_size_text(std::uint64_t bytes);

}  // namespace h2tune
