#include "h2tune/core/paired_difference.h"

#include <cmath>
#include <limits>
#include <stdexcept>

namespace h2tune {

double student_t_975(std::size_t df) {
    static const double kTable[] = {12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
                                    2.201,  2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
                                    2.080,  2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042};
    if (df == 0) throw std::invalid_argument("student_t_975: needs at least one degree of freedom");
    if (df <= 30) return kTable[df - 1];
    // Cornish-Fisher expansion around the normal quantile: within 1e-4 of the exact value for df > 30.
    const double z = 1.959963984540054, v = static_cast<double>(df);
    const double z3 = z * z * z, z5 = z3 * z * z;
    return z + (z3 + z) / (4 * v) + (5 * z5 + 16 * z3 + 3 * z) / (96 * v * v);
}

PairedDifference paired_difference(const std::vector<double>& a, const std::vector<double>& b) {
    if (a.size() != b.size()) throw std::invalid_argument("paired_difference: the two methods have different seed counts");
    constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
    PairedDifference d;
    double sum = 0, sum_a = 0, sum_b = 0;
    std::vector<double> diffs;
    for (std::size_t s = 0; s < a.size(); ++s) {
        if (!std::isfinite(a[s]) || !std::isfinite(b[s])) continue;
        diffs.push_back(a[s] - b[s]);
        sum += a[s] - b[s];
        sum_a += a[s];
        sum_b += b[s];
    }
    d.n = diffs.size();
    if (d.n == 0) {
        d.mean = d.sd = d.low = d.high = d.relative = kNaN;
        return d;
    }
    d.mean = sum / static_cast<double>(d.n);
    d.relative = sum_b != 0 ? sum_a / sum_b - 1 : kNaN;
    if (d.n < 2) {
        d.sd = d.low = d.high = kNaN;
        return d;
    }
    double ss = 0;
    for (double x : diffs) ss += (x - d.mean) * (x - d.mean);
    d.sd = std::sqrt(ss / static_cast<double>(d.n - 1));
    const double half = student_t_975(d.n - 1) * d.sd / std::sqrt(static_cast<double>(d.n));
    d.low = d.mean - half;
    d.high = d.mean + half;
    return d;
}

}  // namespace h2tune
