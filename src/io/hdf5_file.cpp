#include "h2tune/io/hdf5_file.h"

#include <hdf5.h>
#include <sys/statvfs.h>

#include <cstdint>
#include <filesystem>
#include <mutex>

#include "h2tune/core/error.h"
#include "h2tune/core/input_file.h"

namespace h2tune {

namespace {

// HDF5 prints its error stack to stderr by default; we turn that off once and instead put the
// innermost description into the exception. Before that (H5dont_atexit must precede the library's
// initialisation), HDF5's exit handler is declined: a file whose close failed (a full disk) stays
// in its table, and closing it again from the handler at exit dereferences freed state and
// crashes after the error has been reported. Every file is closed by its Hdf5Id before exit.
void silence_hdf5_errors() {
    static std::once_flag once;
    std::call_once(once, [] {
        H5dont_atexit();
        H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
    });
}

herr_t collect_message(unsigned n, const H5E_error2_t* err, void* client) {
    auto* out = static_cast<std::string*>(client);
    if (n == 0 && err && err->desc) *out = err->desc;
    return 0;
}

[[noreturn]] void fail(const std::string& context) {
    std::string reason;
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, collect_message, &reason);
    H5Eclear2(H5E_DEFAULT);
    throw IoError("HDF5: " + context + (reason.empty() ? "" : ": " + reason));
}

hid_t check(hid_t id, const std::string& context) {
    if (id < 0) fail(context);
    return id;
}

void check_status(herr_t status, const std::string& context) {
    if (status < 0) fail(context);
}

hid_t native_type(H5Type t) {
    switch (t) {
        case H5Type::Float64: return H5T_NATIVE_DOUBLE;
        case H5Type::Float32: return H5T_NATIVE_FLOAT;
        case H5Type::Int64: return H5T_NATIVE_INT64;
        case H5Type::UInt8: return H5T_NATIVE_UINT8;
    }
    return H5T_NATIVE_DOUBLE;
}

// Little-endian file types so files are portable regardless of the writer.
hid_t file_type(H5Type t) {
    switch (t) {
        case H5Type::Float64: return H5T_IEEE_F64LE;
        case H5Type::Float32: return H5T_IEEE_F32LE;
        case H5Type::Int64: return H5T_STD_I64LE;
        case H5Type::UInt8: return H5T_STD_U8LE;
    }
    return H5T_IEEE_F64LE;
}

size_t element_count(const std::vector<int64_t>& shape) {
    size_t n = 1;
    for (auto d : shape) n *= static_cast<size_t>(d);
    return n;
}

void close_any(hid_t id) {
    if (id < 0) return;
    switch (H5Iget_type(id)) {
        case H5I_FILE: H5Fclose(id); break;
        case H5I_GROUP: H5Gclose(id); break;
        case H5I_DATASET: H5Dclose(id); break;
        case H5I_DATASPACE: H5Sclose(id); break;
        case H5I_ATTR: H5Aclose(id); break;
        case H5I_DATATYPE: H5Tclose(id); break;
        case H5I_GENPROP_LST: H5Pclose(id); break;
        default: break;
    }
}

Hdf5Id variable_string_type() {
    Hdf5Id t(check(H5Tcopy(H5T_C_S1), "copy string type"));
    check_status(H5Tset_size(t.get(), H5T_VARIABLE), "set string size");
    check_status(H5Tset_cset(t.get(), H5T_CSET_UTF8), "set string charset");
    return t;
}

}  // namespace

Hdf5Id::~Hdf5Id() { close_any(id_); }

Hdf5Id& Hdf5Id::operator=(Hdf5Id&& o) noexcept {
    if (this != &o) {
        close_any(id_);
        id_ = o.id_;
        o.id_ = -1;
    }
    return *this;
}

Hdf5File::Hdf5File(const std::string& path, Mode mode) : path_(path) {
    silence_hdf5_errors();
    // HDF5 opens whatever the path names; a FIFO would block the job for ever (and a directory or
    // device gives a misleading "not an HDF5 file"), so only regular files get that far.
    std::error_code ec;
    if (std::filesystem::exists(path, ec))
        check_input_file(path, InputFileRule{"HDF5 file", UINT64_MAX}, InputErrorKind::kIo);
    if (mode == Mode::Create) {
        file_ = Hdf5Id(check(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), "cannot create " + path));
    } else {
        unsigned flags = mode == Mode::ReadOnly ? H5F_ACC_RDONLY : H5F_ACC_RDWR;
#if H5_VERSION_GE(1, 12, 0)
        const htri_t is_hdf5 = H5Fis_accessible(path.c_str(), H5P_DEFAULT);
#else
        const htri_t is_hdf5 = H5Fis_hdf5(path.c_str());
#endif
        if (is_hdf5 <= 0) {
            H5Eclear2(H5E_DEFAULT);
            throw IoError("HDF5: " + path + " is missing or not an HDF5 file (truncated or corrupted?)");
        }
        file_ = Hdf5Id(check(H5Fopen(path.c_str(), flags, H5P_DEFAULT), "cannot open " + path));
    }
}

std::string Hdf5File::where(const std::string& object) const { return path_ + ":" + object; }

void Hdf5File::create_group(const std::string& name) {
    if (exists(name)) return;
    Hdf5Id lcpl(check(H5Pcreate(H5P_LINK_CREATE), "create link property list"));
    check_status(H5Pset_create_intermediate_group(lcpl.get(), 1), "set intermediate groups");
    Hdf5Id g(check(H5Gcreate2(file_.get(), name.c_str(), lcpl.get(), H5P_DEFAULT, H5P_DEFAULT),
                   "cannot create group " + where(name)));
}

bool Hdf5File::exists(const std::string& name) const {
    if (name == "/") return true;
    // Check each path component: H5Lexists fails if an intermediate link is missing.
    std::string partial;
    size_t pos = 0;
    while (pos != std::string::npos) {
        size_t next = name.find('/', pos + 1);
        partial = name.substr(0, next);
        if (!partial.empty() && partial != "/") {
            htri_t e = H5Lexists(file_.get(), partial.c_str(), H5P_DEFAULT);
            if (e < 0) fail("cannot look up " + where(partial));
            if (e == 0) return false;
        }
        pos = next;
    }
    return true;
}

std::vector<std::string> Hdf5File::children(const std::string& group) const {
    Hdf5Id g(check(H5Gopen2(file_.get(), group.c_str(), H5P_DEFAULT), "missing group " + where(group)));
    H5G_info_t info;
    check_status(H5Gget_info(g.get(), &info), "cannot query group " + where(group));
    std::vector<std::string> out;
    for (hsize_t i = 0; i < info.nlinks; ++i) {
        const ssize_t n = H5Lget_name_by_idx(g.get(), ".", H5_INDEX_NAME, H5_ITER_INC, i, nullptr, 0, H5P_DEFAULT);
        if (n < 0) fail("cannot list group " + where(group));
        std::vector<char> buf(static_cast<size_t>(n) + 1, '\0');
        if (H5Lget_name_by_idx(g.get(), ".", H5_INDEX_NAME, H5_ITER_INC, i, buf.data(), buf.size(), H5P_DEFAULT) < 0)
            fail("cannot list group " + where(group));
        out.emplace_back(buf.data(), static_cast<size_t>(n));
    }
    return out;
}

namespace {
Hdf5Id open_object(hid_t file, const std::string& name, const std::string& where) {
    return Hdf5Id(check(H5Oopen(file, name.c_str(), H5P_DEFAULT), "cannot open " + where));
}

void replace_attribute(hid_t obj, const std::string& name, const std::string& where) {
    htri_t e = H5Aexists(obj, name.c_str());
    if (e < 0) fail("cannot query attribute " + name + " of " + where);
    if (e > 0) check_status(H5Adelete(obj, name.c_str()), "cannot replace attribute " + name + " of " + where);
}

template <class T>
void write_scalar_attribute(hid_t file, const std::string& object, const std::string& name, hid_t ftype, hid_t mtype,
                            const T& value, const std::string& where) {
    Hdf5Id obj = open_object(file, object, where);
    replace_attribute(obj.get(), name, where);
    Hdf5Id space(check(H5Screate(H5S_SCALAR), "create scalar dataspace"));
    Hdf5Id attr(check(H5Acreate2(obj.get(), name.c_str(), ftype, space.get(), H5P_DEFAULT, H5P_DEFAULT),
                      "cannot create attribute " + name + " on " + where));
    check_status(H5Awrite(attr.get(), mtype, &value), "cannot write attribute " + name + " on " + where);
}
}  // namespace

void Hdf5File::set_attribute(const std::string& object, const std::string& name, const std::string& value) {
    Hdf5Id type = variable_string_type();
    const char* ptr = value.c_str();
    write_scalar_attribute(file_.get(), object, name, type.get(), type.get(), ptr, where(object));
}

void Hdf5File::set_attribute(const std::string& object, const std::string& name, int64_t value) {
    write_scalar_attribute(file_.get(), object, name, H5T_STD_I64LE, H5T_NATIVE_INT64, value, where(object));
}

void Hdf5File::set_attribute(const std::string& object, const std::string& name, double value) {
    write_scalar_attribute(file_.get(), object, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, value, where(object));
}

bool Hdf5File::has_attribute(const std::string& object, const std::string& name) const {
    Hdf5Id obj = open_object(file_.get(), object, where(object));
    htri_t e = H5Aexists(obj.get(), name.c_str());
    if (e < 0) fail("cannot query attribute " + name + " of " + where(object));
    return e > 0;
}

namespace {
Hdf5Id open_attribute(hid_t file, const std::string& object, const std::string& name, const std::string& where) {
    Hdf5Id obj = open_object(file, object, where);
    return Hdf5Id(check(H5Aopen(obj.get(), name.c_str(), H5P_DEFAULT), "missing attribute " + name + " on " + where));
}
}  // namespace

std::string Hdf5File::string_attribute(const std::string& object, const std::string& name) const {
    Hdf5Id attr = open_attribute(file_.get(), object, name, where(object));
    Hdf5Id type = variable_string_type();
    char* value = nullptr;
    check_status(H5Aread(attr.get(), type.get(), &value), "cannot read attribute " + name + " of " + where(object));
    std::string out = value ? value : "";
    H5free_memory(value);
    return out;
}

int64_t Hdf5File::int_attribute(const std::string& object, const std::string& name) const {
    Hdf5Id attr = open_attribute(file_.get(), object, name, where(object));
    int64_t v = 0;
    check_status(H5Aread(attr.get(), H5T_NATIVE_INT64, &v), "cannot read attribute " + name + " of " + where(object));
    return v;
}

double Hdf5File::double_attribute(const std::string& object, const std::string& name) const {
    Hdf5Id attr = open_attribute(file_.get(), object, name, where(object));
    double v = 0;
    check_status(H5Aread(attr.get(), H5T_NATIVE_DOUBLE, &v), "cannot read attribute " + name + " of " + where(object));
    return v;
}

void Hdf5File::write_array(const std::string& name, H5Type type, const std::vector<int64_t>& shape, const void* data) {
    std::vector<hsize_t> dims(shape.begin(), shape.end());
    Hdf5Id space(check(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr), "create dataspace"));
    Hdf5Id lcpl(check(H5Pcreate(H5P_LINK_CREATE), "create link property list"));
    check_status(H5Pset_create_intermediate_group(lcpl.get(), 1), "set intermediate groups");
    Hdf5Id ds(check(H5Dcreate2(file_.get(), name.c_str(), file_type(type), space.get(), lcpl.get(), H5P_DEFAULT,
                               H5P_DEFAULT),
                    "cannot create dataset " + where(name)));
    check_status(H5Dwrite(ds.get(), native_type(type), H5S_ALL, H5S_ALL, H5P_DEFAULT, data),
                 "cannot write dataset " + where(name));
}

std::vector<int64_t> Hdf5File::dataset_shape(const std::string& name) const {
    Hdf5Id ds(check(H5Dopen2(file_.get(), name.c_str(), H5P_DEFAULT), "missing dataset " + where(name)));
    Hdf5Id space(check(H5Dget_space(ds.get()), "get dataspace of " + where(name)));
    int rank = H5Sget_simple_extent_ndims(space.get());
    if (rank < 0) fail("get rank of " + where(name));
    std::vector<hsize_t> dims(static_cast<size_t>(rank));
    if (rank > 0) check_status(H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr), "get dims of " + where(name));
    return std::vector<int64_t>(dims.begin(), dims.end());
}

void Hdf5File::read_array(const std::string& name, H5Type type, void* data, size_t elements) const {
    const size_t n = element_count(dataset_shape(name));
    if (n != elements)
        throw IoError("HDF5: dataset " + where(name) + " holds " + std::to_string(n) + " elements, expected " +
                      std::to_string(elements));
    Hdf5Id ds(check(H5Dopen2(file_.get(), name.c_str(), H5P_DEFAULT), "missing dataset " + where(name)));
    check_status(H5Dread(ds.get(), native_type(type), H5S_ALL, H5S_ALL, H5P_DEFAULT, data),
                 "cannot read dataset " + where(name));
}

std::vector<double> Hdf5File::read_doubles(const std::string& name) const {
    const size_t n = element_count(dataset_shape(name));
    std::vector<double> out(n);
    read_array(name, H5Type::Float64, out.data(), n);
    return out;
}

std::vector<int64_t> Hdf5File::read_int64s(const std::string& name) const {
    const size_t n = element_count(dataset_shape(name));
    std::vector<int64_t> out(n);
    read_array(name, H5Type::Int64, out.data(), n);
    return out;
}

void Hdf5File::write_string(const std::string& name, const std::string& value) {
    Hdf5Id type = variable_string_type();
    Hdf5Id space(check(H5Screate(H5S_SCALAR), "create scalar dataspace"));
    Hdf5Id lcpl(check(H5Pcreate(H5P_LINK_CREATE), "create link property list"));
    check_status(H5Pset_create_intermediate_group(lcpl.get(), 1), "set intermediate groups");
    Hdf5Id ds(check(H5Dcreate2(file_.get(), name.c_str(), type.get(), space.get(), lcpl.get(), H5P_DEFAULT, H5P_DEFAULT),
                    "cannot create dataset " + where(name)));
    const char* ptr = value.c_str();
    check_status(H5Dwrite(ds.get(), type.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, &ptr), "cannot write " + where(name));
}

std::string Hdf5File::read_string(const std::string& name) const {
    Hdf5Id type = variable_string_type();
    Hdf5Id ds(check(H5Dopen2(file_.get(), name.c_str(), H5P_DEFAULT), "missing dataset " + where(name)));
    char* value = nullptr;
    check_status(H5Dread(ds.get(), type.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, &value), "cannot read " + where(name));
    std::string out = value ? value : "";
    H5free_memory(value);
    return out;
}

void Hdf5File::create_table(const std::string& name, H5Type type, int64_t columns, const std::string& description) {
    if (columns < 1) throw IoError("HDF5: table " + where(name) + " needs at least one column");
    hsize_t dims[2] = {0, static_cast<hsize_t>(columns)};
    hsize_t maxdims[2] = {H5S_UNLIMITED, static_cast<hsize_t>(columns)};
    hsize_t chunk[2] = {1, static_cast<hsize_t>(columns)};
    Hdf5Id space(check(H5Screate_simple(2, dims, maxdims), "create extensible dataspace"));
    Hdf5Id dcpl(check(H5Pcreate(H5P_DATASET_CREATE), "create dataset property list"));
    check_status(H5Pset_chunk(dcpl.get(), 2, chunk), "set chunking of " + where(name));
    Hdf5Id lcpl(check(H5Pcreate(H5P_LINK_CREATE), "create link property list"));
    check_status(H5Pset_create_intermediate_group(lcpl.get(), 1), "set intermediate groups");
    Hdf5Id ds(check(H5Dcreate2(file_.get(), name.c_str(), file_type(type), space.get(), lcpl.get(), dcpl.get(),
                               H5P_DEFAULT),
                    "cannot create table " + where(name)));
    if (!description.empty()) set_attribute(name, "description", description);
}

void Hdf5File::append_row(const std::string& name, H5Type type, const void* row, int64_t columns) {
    Hdf5Id ds(check(H5Dopen2(file_.get(), name.c_str(), H5P_DEFAULT), "missing table " + where(name)));
    Hdf5Id space(check(H5Dget_space(ds.get()), "get dataspace of " + where(name)));
    hsize_t dims[2] = {0, 0};
    if (H5Sget_simple_extent_ndims(space.get()) != 2) throw IoError("HDF5: " + where(name) + " is not a 2-D table");
    check_status(H5Sget_simple_extent_dims(space.get(), dims, nullptr), "get dims of " + where(name));
    if (static_cast<int64_t>(dims[1]) != columns)
        throw IoError("HDF5: table " + where(name) + " has " + std::to_string(dims[1]) + " columns, row has " +
                      std::to_string(columns));
    hsize_t new_dims[2] = {dims[0] + 1, dims[1]};
    check_status(H5Dset_extent(ds.get(), new_dims), "cannot extend " + where(name));
    Hdf5Id file_space(check(H5Dget_space(ds.get()), "get dataspace of " + where(name)));
    hsize_t start[2] = {dims[0], 0}, count[2] = {1, dims[1]};
    check_status(H5Sselect_hyperslab(file_space.get(), H5S_SELECT_SET, start, nullptr, count, nullptr),
                 "select row of " + where(name));
    Hdf5Id mem_space(check(H5Screate_simple(2, count, nullptr), "create row dataspace"));
    check_status(H5Dwrite(ds.get(), native_type(type), mem_space.get(), file_space.get(), H5P_DEFAULT, row),
                 "cannot append to " + where(name));
}

int64_t Hdf5File::table_rows(const std::string& name) const {
    auto shape = dataset_shape(name);
    return shape.empty() ? 0 : shape[0];
}

void Hdf5File::flush() {
    if (H5Fflush(file_.get(), H5F_SCOPE_GLOBAL) >= 0) return;
    // HDF5 says only "unable to flush"; the usual cause on a cluster is a full scratch or quota.
    std::string context = "cannot flush " + path_;
    struct statvfs fs {};
    const std::string dir = std::filesystem::path(path_).parent_path().string();
    if (::statvfs(dir.empty() ? "." : dir.c_str(), &fs) == 0)
        context += " (" + std::to_string(static_cast<unsigned long long>(fs.f_bavail) * fs.f_frsize / 1024) +
                   " KiB free on its file system)";
    fail(context);
}

}  // namespace h2tune
