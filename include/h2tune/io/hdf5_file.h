// A thin RAII wrapper over the HDF5 C API: files, groups, attributes and the datasets h2tune
// writes (fixed arrays for checkpoints, row-extensible 2-D tables for per-round metrics).
// Every HDF5 call is checked; failures throw IoError with the file, object and HDF5's own reason.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace h2tune {

// Owns one HDF5 identifier (file, group, dataset, dataspace, attribute, property list, type).
class Hdf5Id {
public:
    Hdf5Id() = default;
    explicit Hdf5Id(int64_t id) : id_(id) {}
    ~Hdf5Id();
    Hdf5Id(Hdf5Id&& o) noexcept : id_(o.id_) { o.id_ = -1; }
    Hdf5Id& operator=(Hdf5Id&& o) noexcept;
    Hdf5Id(const Hdf5Id&) = delete;
    Hdf5Id& operator=(const Hdf5Id&) = delete;
    int64_t get() const { return id_; }
    bool valid() const { return id_ >= 0; }

private:
    int64_t id_ = -1;
};

enum class H5Type { Float64, Float32, Int64, UInt8 };

class Hdf5File {
public:
    enum class Mode { Create, ReadOnly, ReadWrite };
    // Create truncates (callers write to a temporary name and rename it into place).
    Hdf5File(const std::string& path, Mode mode);
    const std::string& path() const { return path_; }

    void create_group(const std::string& name);  // parents created as needed; no-op if it exists
    bool exists(const std::string& name) const;  // group, dataset or path
    std::vector<std::string> children(const std::string& group) const;  // link names, sorted by name

    // Attributes on the object at `object` ("/" for the file).
    void set_attribute(const std::string& object, const std::string& name, const std::string& value);
    void set_attribute(const std::string& object, const std::string& name, int64_t value);
    void set_attribute(const std::string& object, const std::string& name, double value);
    std::string string_attribute(const std::string& object, const std::string& name) const;
    int64_t int_attribute(const std::string& object, const std::string& name) const;
    double double_attribute(const std::string& object, const std::string& name) const;
    bool has_attribute(const std::string& object, const std::string& name) const;

    // Fixed-shape datasets (checkpoints). `data` holds prod(shape) elements in row-major order.
    void write_array(const std::string& name, H5Type type, const std::vector<int64_t>& shape, const void* data);
    std::vector<int64_t> dataset_shape(const std::string& name) const;
    void read_array(const std::string& name, H5Type type, void* data, size_t elements) const;
    std::vector<double> read_doubles(const std::string& name) const;
    std::vector<int64_t> read_int64s(const std::string& name) const;
    void write_string(const std::string& name, const std::string& value);  // scalar variable-length string
    std::string read_string(const std::string& name) const;

    // Row-extensible 2-D tables (rounds x columns), chunked by row; `append_row` grows by one row.
    void create_table(const std::string& name, H5Type type, int64_t columns, const std::string& description = "");
    void append_row(const std::string& name, H5Type type, const void* row, int64_t columns);
    int64_t table_rows(const std::string& name) const;

    void flush();  // H5Fflush of the whole file: a crash after it loses nothing written before

private:
    std::string where(const std::string& object) const;
    std::string path_;
    Hdf5Id file_;
};

}  // namespace h2tune
