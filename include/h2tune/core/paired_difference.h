// Paired comparison of two methods over the same seeds: per seed the difference a_s - b_s, its
// mean, and the two-sided 95 % Student-t interval mean +- t(0.975, n - 1) * sd / sqrt(n). Pairing
// removes what the seed changes for both methods alike (data order, initialisation), so it is the
// interval to quote for "method A beats method B" when both ran the same seeds.
#pragma once

#include <cstddef>
#include <vector>

namespace h2tune {

struct PairedDifference {
    std::size_t n = 0;      // seeds with a finite value for both methods
    double mean = 0;        // mean of a_s - b_s
    double sd = 0;          // sample standard deviation (n - 1) of the differences; NaN for n < 2
    double low = 0, high = 0;  // the 95 % interval; NaN for n < 2
    double relative = 0;    // mean(a) / mean(b) - 1 over the same seeds (the paper's "x % better"); NaN if mean(b) = 0
};

// `a[s]` and `b[s]` are the two methods' values for seed s; pairs with a non-finite side are left
// out. Throws std::invalid_argument when the lengths differ.
PairedDifference paired_difference(const std::vector<double>& a, const std::vector<double>& b);

// The 0.975 quantile of Student's t with `df` degrees of freedom (df >= 1), from a table to 3
// decimals for df <= 30 and the normal-tail expansion above.
double student_t_975(std::size_t df);

}  // namespace h2tune
