// One exception hierarchy for the whole code base. Internals throw; `main` catches once, logs the
// rank and aborts the MPI job cleanly. Messages name the offending option, file and line so that a
// user can fix the input without reading source code.
#pragma once

#include <stdexcept>
#include <string>

namespace h2tune {

class Error : public std::runtime_error {
public:
    explicit Error(const std::string& what) : std::runtime_error(what) {}
};

// A job file, command-line option or value is wrong (user input).
class ConfigError : public Error {
public:
    using Error::Error;
};

// A data file (JSONL task, corpus, label set) is missing or malformed.
class DataError : public Error {
public:
    using Error::Error;
};

// A model, tokenizer or safetensors file is missing, malformed or inconsistent with its config.
class ModelError : public Error {
public:
    using Error::Error;
};

// Filesystem or HDF5 failure.
class IoError : public Error {
public:
    using Error::Error;
};

// MPI, NCCL or CUDA failure.
class CommError : public Error {
public:
    using Error::Error;
};

// A message between ranks that cannot be decoded: truncated, of another protocol version or
// kind, or garbage. A defect or a mismatched build, not bad input: exit code 1.
class MessageError : public CommError {
public:
    using CommError::CommError;
};

// Builds "file:line: message" (line omitted when 0), the form editors and compilers use.
std::string error_at(const std::string& file, long line, const std::string& message);

}  // namespace h2tune
