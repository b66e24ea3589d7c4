// The safetensors format (https://github.com/huggingface/safetensors): an 8-byte little-endian
// header length N, N bytes of JSON {name: {dtype, shape, data_offsets: [begin, end]},
// "__metadata__": {str: str}}, then the raw little-endian tensor bytes. Used for model weights
// (model.safetensors) and adapter exports, and readable by every Hugging Face tool.
//
// The reader trusts nothing: every length, offset, shape and dtype is checked before a byte of
// tensor data is touched, and each failure is a ModelError naming the file (and tensor).
// The writer is deterministic (names sorted, header padded with spaces to 8 bytes) and atomic.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <torch/types.h>

namespace h2tune {

// One entry of a safetensors header.
struct SafetensorsEntry {
    std::string dtype;              // as in the file: "F32", "BF16", ...
    torch::Dtype torch_dtype;       // the LibTorch dtype it loads as
    std::vector<int64_t> shape;
    int64_t begin = 0, end = 0;     // byte offsets relative to the start of the data section
};

// A parsed and validated header.
struct SafetensorsHeader {
    std::map<std::string, SafetensorsEntry> entries;
    std::map<std::string, std::string> metadata;
    uint64_t data_start = 0;  // absolute file offset of the data section (8 + header length)
};

// Parses the header of a safetensors file of `file_size` bytes from `bytes`, the file's first
// bytes (at least the 8-byte length and the header JSON; more are ignored). Checks everything
// safetensors_read_header checks, the tiling of the data section included; `source` names the
// file in errors. Throws ModelError.
SafetensorsHeader safetensors_parse_header(const std::string& bytes, const std::string& source, uint64_t file_size);

// Reads and validates only the header: names, dtypes, shapes (cheap; no tensor data read). The
// path must name a regular file.
std::map<std::string, SafetensorsEntry> safetensors_read_header(
    const std::string& path, std::map<std::string, std::string>* metadata = nullptr);

// Loads every tensor (contiguous, CPU, in the file's dtype: F16 stays kHalf, BF16 kBFloat16).
// Supported dtypes: F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL.
std::map<std::string, torch::Tensor> safetensors_load(const std::string& path,
                                                      std::map<std::string, std::string>* metadata = nullptr);

// For each tensor of the file (in file order), `destination` returns where to put it: a tensor of
// the entry's shape (any dtype, device or layout) or an undefined tensor to skip it. A contiguous
// CPU destination of the file's dtype is filled straight from the file; any other goes through
// one temporary of the tensor's own size. Nothing else is buffered, so loading a model this way
// needs little more memory than the model. Throws ModelError (a shape mismatch names the tensor).
using SafetensorsDestination = std::function<torch::Tensor(const std::string& name, const SafetensorsEntry& entry)>;
void safetensors_read_into(const std::string& path, const SafetensorsDestination& destination);

// Writes `tensors` (any device, any layout; copied to contiguous CPU) atomically. Throws
// ModelError for an unsupported dtype or a reserved name, IoError when the file cannot be written.
void safetensors_save(const std::string& path, const std::map<std::string, torch::Tensor>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

// The file's dtype string for a LibTorch dtype ("F32" for kFloat); throws ModelError if the
// format has none.
std::string safetensors_dtype_name(torch::Dtype dtype);

}  // namespace h2tune
