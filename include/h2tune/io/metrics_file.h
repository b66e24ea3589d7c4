// metrics.h5: run attributes, per-client static info and per-round x per-client metric tables,
// extended and flushed every round so that a crash loses at most the round in progress.
// Layout (docs/hdf5.md):
//   /                     attributes: h2tune_version, git_sha, torch_version, mpi_version, hdf5_version,
//                         method, job_file, created_utc, num_clients, rounds_planned
//   /config               the resolved job configuration (INI text)
//   /clients/<field>      [K] per-client values (majority_rate, rank, layers, ...); names in /clients/name
//   /metrics/<metric>     [rounds, K] float64, row r = round r
//   /rounds/<metric>      [rounds, 1] float64 (aggregate_seconds, round_seconds, ...)
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "h2tune/io/hdf5_file.h"

namespace h2tune {

class MetricsFile {
public:
    // Creates `path` (refusing to overwrite an existing file unless `overwrite`).
    MetricsFile(const std::string& path, int64_t num_clients, const std::vector<std::string>& client_metrics,
                const std::vector<std::string>& round_metrics, bool overwrite);
    // Opens an existing file to append further rounds (resume).
    explicit MetricsFile(const std::string& path);

    void set_attribute(const std::string& name, const std::string& value);
    void set_attribute(const std::string& name, double value);
    void set_attribute(const std::string& name, int64_t value);
    void write_config(const std::string& ini_text);
    void write_client_names(const std::vector<std::string>& names);  // /clients attributes name_K
    // /clients attributes <attribute>_K, one string per client.
    void write_client_strings(const std::string& attribute, const std::vector<std::string>& values);
    void write_client_values(const std::string& field, const std::vector<double>& values);

    // Appends one round: every client metric ([K] values) and every round metric, then flushes and
    // closes the file (reopened by the next write) so readers can open it between rounds.
    void append_round(const std::map<std::string, std::vector<double>>& client_values,
                      const std::map<std::string, double>& round_values);
    int64_t rounds_written();
    void close() { file_.reset(); }  // the next write reopens it

    Hdf5File& file() { return open(); }

private:
    Hdf5File& open();  // reopens after append_round closed the file
    std::string path_;
    std::unique_ptr<Hdf5File> file_;
    int64_t num_clients_ = 0;
    std::vector<std::string> client_metrics_, round_metrics_;
};

}  // namespace h2tune
