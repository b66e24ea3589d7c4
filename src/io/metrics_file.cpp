#include "h2tune/io/metrics_file.h"

#include <filesystem>

#include "h2tune/core/error.h"

namespace fs = std::filesystem;

namespace h2tune {

MetricsFile::MetricsFile(const std::string& path, int64_t num_clients, const std::vector<std::string>& client_metrics,
                         const std::vector<std::string>& round_metrics, bool overwrite)
    : num_clients_(num_clients), client_metrics_(client_metrics), round_metrics_(round_metrics) {
    if (!overwrite && fs::exists(path))
        throw ConfigError(path + ": already exists; choose another --output, or --resume the run");
    path_ = path;
    file_ = std::make_unique<Hdf5File>(path, Hdf5File::Mode::Create);
    file_->create_group("/metrics");
    file_->create_group("/rounds");
    file_->create_group("/clients");
    for (const auto& m : client_metrics_) file_->create_table("/metrics/" + m, H5Type::Float64, num_clients_);
    for (const auto& m : round_metrics_) file_->create_table("/rounds/" + m, H5Type::Float64, 1);
    file_->set_attribute("/", "num_clients", num_clients_);
    file_->flush();
}

MetricsFile::MetricsFile(const std::string& path) {
    path_ = path;
    file_ = std::make_unique<Hdf5File>(path, Hdf5File::Mode::ReadWrite);
    num_clients_ = file_->int_attribute("/", "num_clients");
    // The metric lists are the file's own tables, so that appended rounds extend every one of them.
    client_metrics_ = file_->children("/metrics");
    round_metrics_ = file_->children("/rounds");
}

void MetricsFile::set_attribute(const std::string& name, const std::string& value) { open().set_attribute("/", name, value); }
void MetricsFile::set_attribute(const std::string& name, double value) { open().set_attribute("/", name, value); }
void MetricsFile::set_attribute(const std::string& name, int64_t value) { open().set_attribute("/", name, value); }

void MetricsFile::write_config(const std::string& ini_text) { open().write_string("/config", ini_text); }

void MetricsFile::write_client_names(const std::vector<std::string>& names) { write_client_strings("name", names); }

void MetricsFile::write_client_strings(const std::string& attribute, const std::vector<std::string>& values) {
    if (static_cast<int64_t>(values.size()) != num_clients_)
        throw IoError("metrics: /clients " + attribute + "_K needs one value per client");
    for (size_t k = 0; k < values.size(); ++k)
        open().set_attribute("/clients", attribute + "_" + std::to_string(k), values[k]);
}

void MetricsFile::write_client_values(const std::string& field, const std::vector<double>& values) {
    if (static_cast<int64_t>(values.size()) != num_clients_)
        throw IoError("metrics: /clients/" + field + " needs one value per client");
    open().write_array("/clients/" + field, H5Type::Float64, {num_clients_}, values.data());
}

void MetricsFile::append_round(const std::map<std::string, std::vector<double>>& client_values,
                               const std::map<std::string, double>& round_values) {
    // Validate the whole round first: a rejected round must not leave the tables with unequal rows.
    for (const auto& m : client_metrics_) {
        auto it = client_values.find(m);
        if (it == client_values.end() || static_cast<int64_t>(it->second.size()) != num_clients_)
            throw IoError("metrics: round is missing per-client values of '" + m + "'");
    }
    for (const auto& m : client_metrics_)
        open().append_row("/metrics/" + m, H5Type::Float64, client_values.at(m).data(), num_clients_);
    for (const auto& m : round_metrics_) {
        auto it = round_values.find(m);
        double v = it == round_values.end() ? 0.0 : it->second;
        open().append_row("/rounds/" + m, H5Type::Float64, &v, 1);
    }
    open().flush();
    // Closing after every round lets h5py and h5dump read the file while the run goes on (HDF5
    // locks files that a writer holds open) and leaves nothing half-written between rounds.
    file_.reset();
}

Hdf5File& MetricsFile::open() {
    if (!file_) file_ = std::make_unique<Hdf5File>(path_, Hdf5File::Mode::ReadWrite);
    return *file_;
}

int64_t MetricsFile::rounds_written() {
    return client_metrics_.empty() ? 0 : open().table_rows("/metrics/" + client_metrics_.front());
}

}  // namespace h2tune
