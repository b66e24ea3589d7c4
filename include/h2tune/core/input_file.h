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
