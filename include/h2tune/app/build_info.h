// Versions and provenance recorded in every output file and printed by `h2tune --version`.
#pragma once

#include <string>

namespace h2tune {

std::string h2tune_version();
std::string git_sha();
std::string torch_version();
std::string mpi_version();   // library version string of the MPI implementation
std::string hdf5_version();
std::string cpu_model();     // the CPU's model name (/proc/cpuinfo), "unknown" where not available

}  // namespace h2tune
