// Paired differences over seeds and their 95 % Student-t interval.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <stdexcept>

#include "h2tune/core/paired_difference.h"

using namespace h2tune;

TEST(PairedDifference, MeanAndStudentIntervalOfTheDifferences) {
    // Differences 0.02, 0.04, 0.00, 0.06, 0.03: mean 0.03, sd sqrt(0.0005), t(0.975, 4) = 2.776.
    const std::vector<double> a = {0.52, 0.64, 0.40, 0.76, 0.53}, b = {0.50, 0.60, 0.40, 0.70, 0.50};
    const PairedDifference d = paired_difference(a, b);
    EXPECT_EQ(d.n, 5u);
    EXPECT_NEAR(d.mean, 0.03, 1e-12);
    EXPECT_NEAR(d.sd, std::sqrt(0.0005), 1e-12);
    const double half = 2.776 * std::sqrt(0.0005) / std::sqrt(5.0);
    EXPECT_NEAR(d.low, 0.03 - half, 1e-12);
    EXPECT_NEAR(d.high, 0.03 + half, 1e-12);
    EXPECT_NEAR(d.relative, (0.52 + 0.64 + 0.40 + 0.76 + 0.53) / (0.50 + 0.60 + 0.40 + 0.70 + 0.50) - 1, 1e-12);
}

TEST(PairedDifference, PairingRemovesWhatTheSeedShiftsForBoth) {
    // Seeds move both methods by the same large amount; the difference is constant: zero width.
    const std::vector<double> a = {0.31, 0.91, 0.51}, b = {0.30, 0.90, 0.50};
    const PairedDifference d = paired_difference(a, b);
    EXPECT_NEAR(d.mean, 0.01, 1e-12);
    EXPECT_NEAR(d.high - d.low, 0.0, 1e-12);
}

TEST(PairedDifference, PairsWithAMissingSideAreLeftOut) {
    const double nan = std::numeric_limits<double>::quiet_NaN();
    const PairedDifference d = paired_difference({0.5, nan, 0.7}, {0.4, 0.6, nan});
    EXPECT_EQ(d.n, 1u);
    EXPECT_NEAR(d.mean, 0.1, 1e-12);
    EXPECT_TRUE(std::isnan(d.low));  // one pair: no interval
    EXPECT_TRUE(std::isnan(paired_difference({nan}, {0.1}).mean));
    EXPECT_THROW(paired_difference({0.1, 0.2}, {0.1}), std::invalid_argument);
}

TEST(PairedDifference, StudentQuantiles) {
    EXPECT_DOUBLE_EQ(student_t_975(1), 12.706);
    EXPECT_DOUBLE_EQ(student_t_975(4), 2.776);
    EXPECT_DOUBLE_EQ(student_t_975(30), 2.042);
    EXPECT_NEAR(student_t_975(60), 2.000, 1e-3);   // tables: 2.000
    EXPECT_NEAR(student_t_975(120), 1.980, 1e-3);  // tables: 1.980
    EXPECT_LT(student_t_975(31), student_t_975(30));
    EXPECT_THROW(student_t_975(0), std::invalid_argument);
}
