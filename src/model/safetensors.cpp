#include "h2tune/model/safetensors.h"

#include <algorithm>
#include <cstring>
#include <tuple>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "h2tune/core/error.h"
#include "h2tune/core/input_file.h"
#include "h2tune/core/shape_text.h"
#include "model_file.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors I/O copies raw little-endian bytes; a big-endian host needs byte swapping"
#endif

namespace h2tune {

namespace {

using json = nlohmann::json;

// A header larger than this is not a model we wrote or could use; refusing it early keeps a
// corrupt length field from allocating gigabytes.
constexpr uint64_t kMaxHeaderBytes = 100ull * 1000 * 1000;

struct DtypeInfo {
    const char* name;
    torch::Dtype dtype;
    int64_t size;
};

constexpr DtypeInfo kDtypes[] = {
    {"F64", torch::kFloat64, 8}, {"F32", torch::kFloat32, 4}, {"F16", torch::kFloat16, 2},
    {"BF16", torch::kBFloat16, 2}, {"I64", torch::kInt64, 8}, {"I32", torch::kInt32, 4},
    {"I16", torch::kInt16, 2},    {"I8", torch::kInt8, 1},     {"U8", torch::kUInt8, 1},
    {"BOOL", torch::kBool, 1},
};

// In the format but without a LibTorch 1.13 equivalent.
constexpr const char* kKnownUnsupported[] = {"U16", "U32", "U64", "F8_E4M3", "F8_E5M2", "F8_E8M0", "F4", "C64"};

const DtypeInfo* find_dtype(const std::string& name) {
    for (const auto& d : kDtypes)
        if (name == d.name) return &d;
    return nullptr;
}

std::string supported_list() {
    std::string s;
    for (const auto& d : kDtypes) s += (s.empty() ? "" : " ") + std::string(d.name);
    return s;
}

// Refuses a FIFO or device by name (opening one must not block); the data is then read with pread
// at the offsets the header gives, never as a whole.
class File : public InputFile {
public:
    explicit File(const std::string& path)
        : InputFile(path, InputFileRule{"safetensors file", static_cast<uint64_t>(INT64_MAX)}, InputErrorKind::kModel) {}
};

using Parsed = SafetensorsHeader;

SafetensorsEntry parse_entry(const std::string& path, const std::string& name, const json& v,
                             uint64_t data_size) {
    const std::string where = path + ": tensor '" + name + "': ";
    if (!v.is_object()) throw ModelError(where + "header entry is not an object");
    if (!v.contains("dtype") || !v["dtype"].is_string())
        throw ModelError(where + "missing or non-string 'dtype'");
    if (!v.contains("shape") || !v["shape"].is_array())
        throw ModelError(where + "missing or non-array 'shape'");
    if (!v.contains("data_offsets") || !v["data_offsets"].is_array() || v["data_offsets"].size() != 2)
        throw ModelError(where + "'data_offsets' must be an array [begin, end]");

    SafetensorsEntry e;
    e.dtype = v["dtype"].get<std::string>();
    const DtypeInfo* info = find_dtype(e.dtype);
    if (info == nullptr) {
        for (const char* u : kKnownUnsupported)
            if (e.dtype == u)
                throw ModelError(where + "dtype '" + e.dtype + "' is not supported (supported: " +
                                 supported_list() + ")");
        throw ModelError(where + "unknown dtype '" + e.dtype + "' (supported: " + supported_list() + ")");
    }
    e.torch_dtype = info->dtype;

    // numel computed with overflow detection; a dimension of 0 makes the tensor empty.
    uint64_t numel = 1;
    bool overflow = false;
    for (const auto& d : v["shape"]) {
        if (!d.is_number_integer()) throw ModelError(where + "shape holds a non-integer " + d.dump());
        if (!d.is_number_unsigned()) throw ModelError(where + "negative dimension " + d.dump() + " in shape");
        const uint64_t dim = d.get<uint64_t>();
        if (dim > static_cast<uint64_t>(INT64_MAX)) throw ModelError(where + "dimension " + d.dump() + " is too large");
        e.shape.push_back(static_cast<int64_t>(dim));
        if (__builtin_mul_overflow(numel, dim, &numel)) overflow = true;
    }
    const auto& off = v["data_offsets"];
    for (const auto& o : off)
        if (!o.is_number_unsigned()) throw ModelError(where + "data_offsets must be non-negative integers");
    const uint64_t begin = off[0].get<uint64_t>(), end = off[1].get<uint64_t>();
    if (end < begin)
        throw ModelError(where + "data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) +
                         "] are reversed");
    if (end > data_size)
        throw ModelError(where + "data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) +
                         "] run past the end of the data section (" + std::to_string(data_size) + " bytes)");
    uint64_t nbytes = 0;
    const bool empty = std::find(e.shape.begin(), e.shape.end(), 0) != e.shape.end();
    if (!empty && (overflow || __builtin_mul_overflow(numel, static_cast<uint64_t>(info->size), &nbytes)))
        throw ModelError(where + "shape is too large");
    if (empty) nbytes = 0;
    if (nbytes != end - begin) {
        std::string shape;
        for (auto d : e.shape) shape += (shape.empty() ? "" : ", ") + std::to_string(d);
        throw ModelError(where + "shape [" + shape + "] of " + e.dtype + " needs " + std::to_string(nbytes) +
                         " bytes but data_offsets span " + std::to_string(end - begin));
    }
    e.begin = static_cast<int64_t>(begin);
    e.end = static_cast<int64_t>(end);
    return e;
}

// The header length from the first 8 bytes, checked against the cap and the file size.
uint64_t header_length(const unsigned char* len_bytes, uint64_t file_size, const std::string& path) {
    uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | len_bytes[i];
    if (n > kMaxHeaderBytes)
        throw ModelError(path + ": header length " + std::to_string(n) + " is implausible (> 100 MB); " +
                         "not a safetensors file or corrupt");
    if (n > file_size - 8)
        throw ModelError(path + ": header length " + std::to_string(n) + " runs past the end of the file (" +
                         std::to_string(file_size) + " bytes); truncated?");
    return n;
}

void check_file_size(uint64_t file_size, const std::string& path) {
    if (file_size < 8)
        throw ModelError(path + ": not a safetensors file: " + std::to_string(file_size) +
                         " bytes, shorter than the 8-byte header length");
    // Offsets are kept as int64 (LibTorch's type); no real file comes near.
    if (file_size > static_cast<uint64_t>(INT64_MAX))
        throw ModelError(path + ": " + std::to_string(file_size) + " bytes is beyond any safetensors file");
}

// Parses header JSON `text` of a file of `file_size` bytes whose data section starts at 8 + text size.
Parsed parse_header_text(const std::string& text, uint64_t file_size, const std::string& path) {
    const uint64_t n = text.size();
    if (json_nesting_depth(text) > model_file::kMaxJsonDepth)
        throw ModelError(path + ": header JSON nested deeper than " + std::to_string(model_file::kMaxJsonDepth) +
                         " levels; not a safetensors file or corrupt");
    json header;
    try {
        header = json::parse(text);
    } catch (const json::exception& e) {
        throw ModelError(path + ": header is not valid JSON: " + e.what());
    }
    if (!header.is_object()) throw ModelError(path + ": header is not a JSON object");

    Parsed out;
    out.data_start = 8 + n;
    const uint64_t data_size = file_size - out.data_start;
    for (auto it = header.begin(); it != header.end(); ++it) {
        if (it.key() == "__metadata__") {
            if (!it->is_object()) throw ModelError(path + ": __metadata__ is not an object");
            for (auto m = it->begin(); m != it->end(); ++m) {
                if (!m->is_string())
                    throw ModelError(path + ": __metadata__ value of '" + m.key() + "' is not a string");
                out.metadata[m.key()] = m->get<std::string>();
            }
            continue;
        }
        out.entries.emplace(it.key(), parse_entry(path, it.key(), *it, data_size));
    }

    // The data section must be exactly tiled by the tensors: no overlaps, holes or trailing bytes
    // (the rule of the reference implementation). Sorting by (begin, end) keeps empty tensors first.
    std::vector<std::tuple<int64_t, int64_t, const std::string*>> spans;
    for (const auto& [name, e] : out.entries) spans.emplace_back(e.begin, e.end, &name);
    std::sort(spans.begin(), spans.end());
    int64_t cursor = 0;
    const std::string* prev = nullptr;
    for (const auto& [b, e, name] : spans) {
        if (b < cursor)
            throw ModelError(path + ": tensor '" + *name + "' overlaps tensor '" + *prev + "' (data_offsets begin " +
                             std::to_string(b) + " < " + std::to_string(cursor) + ")");
        if (b > cursor)
            throw ModelError(path + ": tensor '" + *name + "' leaves a hole in the data section (begins at " +
                             std::to_string(b) + ", previous data ends at " + std::to_string(cursor) + ")");
        cursor = e;
        prev = name;
    }
    if (static_cast<uint64_t>(cursor) != data_size)
        throw ModelError(path + ": data section holds " + std::to_string(data_size) + " bytes but tensors cover " +
                         std::to_string(cursor) + " (truncated or trailing garbage)");
    return out;
}

Parsed parse_header(const File& file, const std::string& path) {
    check_file_size(file.size(), path);
    unsigned char len_bytes[8];
    file.read_at(0, len_bytes, 8);
    const uint64_t n = header_length(len_bytes, file.size(), path);
    std::string text(n, '\0');
    file.read_at(8, text.data(), n);
    return parse_header_text(text, file.size(), path);
}

}  // namespace

std::string safetensors_dtype_name(torch::Dtype dtype) {
    for (const auto& d : kDtypes)
        if (d.dtype == dtype) return d.name;
    throw ModelError(std::string("safetensors: no dtype for LibTorch ") + c10::toString(dtype));
}

SafetensorsHeader safetensors_parse_header(const std::string& bytes, const std::string& source, uint64_t file_size) {
    check_file_size(file_size, source);
    if (bytes.size() < 8)
        throw ModelError(source + ": not a safetensors file: " + std::to_string(bytes.size()) +
                         " bytes given, shorter than the 8-byte header length");
    const uint64_t n = header_length(reinterpret_cast<const unsigned char*>(bytes.data()), file_size, source);
    if (n > bytes.size() - 8)
        throw ModelError(source + ": header length " + std::to_string(n) + " runs past the " +
                         std::to_string(bytes.size()) + " bytes given");
    return parse_header_text(bytes.substr(8, n), file_size, source);
}

std::map<std::string, SafetensorsEntry> safetensors_read_header(const std::string& path,
                                                                std::map<std::string, std::string>* metadata) {
    File file(path);
    Parsed p = parse_header(file, path);
    if (metadata) *metadata = std::move(p.metadata);
    return std::move(p.entries);
}

namespace {

// Any byte but 0/1 in a bool tensor is undefined behaviour in LibTorch kernels.
void check_bool_bytes(const std::string& path, const std::string& name, const torch::Tensor& t) {
    const auto* bytes = static_cast<const uint8_t*>(t.data_ptr());
    const auto n = static_cast<uint64_t>(t.numel());
    for (uint64_t i = 0; i < n; ++i)
        if (bytes[i] > 1)
            throw ModelError(path + ": tensor '" + name + "': BOOL byte " + std::to_string(bytes[i]) + " at element " +
                             std::to_string(i) + " is neither 0 nor 1");
}

// Reads entry `e` into a contiguous CPU tensor `t` of the entry's dtype and shape.
void read_entry(const File& file, const Parsed& p, const std::string& path, const std::string& name,
                const SafetensorsEntry& e, torch::Tensor& t) {
    const auto nbytes = static_cast<uint64_t>(e.end - e.begin);
    if (nbytes > 0) file.read_at(p.data_start + static_cast<uint64_t>(e.begin), t.data_ptr(), nbytes);
    if (e.torch_dtype == torch::kBool) check_bool_bytes(path, name, t);
}

}  // namespace

std::map<std::string, torch::Tensor> safetensors_load(const std::string& path,
                                                      std::map<std::string, std::string>* metadata) {
    File file(path);
    Parsed p = parse_header(file, path);
    std::map<std::string, torch::Tensor> out;
    for (const auto& [name, e] : p.entries) {
        // Read straight into the tensor's storage: one copy, no whole-file buffer.
        torch::Tensor t = torch::empty(e.shape, torch::TensorOptions().dtype(e.torch_dtype));
        read_entry(file, p, path, name, e, t);
        out.emplace(name, std::move(t));
    }
    if (metadata) *metadata = std::move(p.metadata);
    return out;
}

void safetensors_read_into(const std::string& path, const SafetensorsDestination& destination) {
    File file(path);
    const Parsed p = parse_header(file, path);
    for (const auto& [name, e] : p.entries) {
        torch::Tensor dest = destination(name, e);
        if (!dest.defined()) continue;
        if (dest.sizes().vec() != e.shape)
            throw ModelError(path + ": tensor '" + name + "' has shape " + shape_string(e.shape) +
                             " but its destination is " + shape_string(dest.sizes()));
        torch::NoGradGuard no_grad;
        if (dest.device().is_cpu() && dest.is_contiguous() && dest.scalar_type() == e.torch_dtype) {
            read_entry(file, p, path, name, e, dest);
        } else {
            torch::Tensor staged = torch::empty(e.shape, torch::TensorOptions().dtype(e.torch_dtype));
            read_entry(file, p, path, name, e, staged);
            dest.copy_(staged);
        }
    }
}

void safetensors_save(const std::string& path, const std::map<std::string, torch::Tensor>& tensors,
                      const std::map<std::string, std::string>& metadata) {
    struct Item {
        const std::string* name;
        torch::Tensor data;  // contiguous CPU
        int64_t elem_size;
    };
    std::vector<Item> items;
    items.reserve(tensors.size());
    for (const auto& [name, t] : tensors) {
        if (name == "__metadata__") throw ModelError(path + ": '__metadata__' is reserved and cannot name a tensor");
        if (!t.defined()) throw ModelError(path + ": tensor '" + name + "' is undefined");
        std::string dname;
        try {
            dname = safetensors_dtype_name(t.scalar_type());
        } catch (const ModelError& e) {
            throw ModelError(path + ": tensor '" + name + "': " + e.what());
        }
        torch::Tensor c = t.detach().to(torch::kCPU).contiguous();
        items.push_back({&name, c, static_cast<int64_t>(c.element_size())});
    }
    // Data order: larger elements first, then by name. Every tensor then starts at a multiple of
    // its element size (the header is padded to 8), as Hugging Face's writer arranges it.
    std::stable_sort(items.begin(), items.end(),
                     [](const Item& a, const Item& b) { return a.elem_size > b.elem_size; });

    json header = json::object();
    int64_t offset = 0;
    for (const auto& it : items) {
        const int64_t nbytes = it.data.numel() * it.elem_size;
        header[*it.name] = {{"dtype", safetensors_dtype_name(it.data.scalar_type())},
                            {"shape", it.data.sizes().vec()},
                            {"data_offsets", {offset, offset + nbytes}}};
        offset += nbytes;
    }
    if (!metadata.empty()) header["__metadata__"] = metadata;
    std::string text = header.dump();
    text.append((8 - text.size() % 8) % 8, ' ');

    unsigned char len_bytes[8];
    uint64_t n = text.size();
    for (int i = 0; i < 8; ++i) len_bytes[i] = static_cast<unsigned char>((n >> (8 * i)) & 0xff);

    std::vector<model_file::Chunk> chunks{{len_bytes, 8}, {text.data(), text.size()}};
    for (const auto& it : items)
        if (it.data.numel() > 0)
            chunks.push_back({it.data.data_ptr(), static_cast<std::size_t>(it.data.numel() * it.elem_size)});
    model_file::write_atomic(path, chunks);
}

}  // namespace h2tune
