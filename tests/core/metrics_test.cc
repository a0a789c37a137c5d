// Tests of core/metrics.h: the exposition format, concurrency, registration
// rules and misuse handling.
#include "core/metrics.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"

namespace oclip {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

#ifdef NDEBUG
constexpr bool kAssertsEnabled = false;
#else
constexpr bool kAssertsEnabled = true;
#endif

// The value an exposition prints for a gauge set to `value`.
std::string GaugeText(double value) {
  MetricsRegistry registry;
  registry.AddGauge("g", "h")->WithLabels({})->Set(value);
  const std::string text = registry.Exposition();
  const std::string prefix = "# HELP g h\n# TYPE g gauge\ng ";
  EXPECT_EQ(text.compare(0, prefix.size(), prefix), 0) << text;
  EXPECT_EQ(text.back(), '\n');
  return text.substr(prefix.size(), text.size() - prefix.size() - 1);
}

// ---------------------------------------------------------------------------
// Exposition format.

TEST(MetricsExpositionTest, CounterHasHelpTypeAndValue) {
  MetricsRegistry registry;
  Counter* counter = registry.AddCounter("oclip_things_total", "Things done.")->WithLabels({});
  EXPECT_EQ(registry.Exposition(),
            "# HELP oclip_things_total Things done.\n"
            "# TYPE oclip_things_total counter\n"
            "oclip_things_total 0\n");
  counter->Increment();
  counter->Increment(2.5);
  EXPECT_EQ(counter->Value(), 3.5);
  EXPECT_EQ(registry.Exposition(),
            "# HELP oclip_things_total Things done.\n"
            "# TYPE oclip_things_total counter\n"
            "oclip_things_total 3.5\n");
}

TEST(MetricsExpositionTest, SeriesSortedByLabelValuesAndLabelsInDeclaredOrder) {
  MetricsRegistry registry;
  // "model" before "code": not alphabetical, so the output shows which order
  // is used.
  CounterFamily* family = registry.AddCounter("requests_total", "Calls.", {"model", "code"});
  family->WithLabels({"b", "OK"})->Increment(1);
  family->WithLabels({"a", "ZZ"})->Increment(2);
  family->WithLabels({"a", "CANCELLED"})->Increment(3);
  family->WithLabels({"b", "OK"})->Increment(4);
  EXPECT_EQ(registry.Exposition(),
            "# HELP requests_total Calls.\n"
            "# TYPE requests_total counter\n"
            "requests_total{model=\"a\",code=\"CANCELLED\"} 3\n"
            "requests_total{model=\"a\",code=\"ZZ\"} 2\n"
            "requests_total{model=\"b\",code=\"OK\"} 5\n");
}

TEST(MetricsExpositionTest, EscapesHelpAndLabelValues) {
  MetricsRegistry registry;
  registry.AddGauge("g", "two\nlines, a back\\slash and \"quotes\"", {"path"})
      ->WithLabels({"C:\\dir\\\"x\"\nend"})
      ->Set(1);
  EXPECT_EQ(registry.Exposition(),
            // HELP escapes backslash and line feed only.
            "# HELP g two\\nlines, a back\\\\slash and \"quotes\"\n"
            "# TYPE g gauge\n"
            // Label values also escape double quotes.
            "g{path=\"C:\\\\dir\\\\\\\"x\\\"\\nend\"} 1\n");
}

TEST(MetricsExpositionTest, HistogramBucketsAreCumulativeAndEndWithInf) {
  MetricsRegistry registry;
  Histogram* histogram =
      registry.AddHistogram("latency_seconds", "Latency.", {}, {0.5, 1, 2.5})->WithLabels({});
  for (double v : {0.25, 0.5, 0.75, 2.0, 10.0}) histogram->Observe(v);
  EXPECT_EQ(registry.Exposition(),
            "# HELP latency_seconds Latency.\n"
            "# TYPE latency_seconds histogram\n"
            "latency_seconds_bucket{le=\"0.5\"} 2\n"  // 0.5 itself is in le="0.5"
            "latency_seconds_bucket{le=\"1\"} 3\n"
            "latency_seconds_bucket{le=\"2.5\"} 4\n"
            "latency_seconds_bucket{le=\"+Inf\"} 5\n"
            "latency_seconds_sum 13.5\n"
            "latency_seconds_count 5\n");
  EXPECT_EQ(histogram->Count(), 5u);
  EXPECT_EQ(histogram->Sum(), 13.5);
  EXPECT_EQ(histogram->BucketCounts(), (std::vector<uint64_t>{2, 3, 4, 5}));
}

TEST(MetricsExpositionTest, HistogramPutsLeAfterTheFamilyLabels) {
  MetricsRegistry registry;
  HistogramFamily* family = registry.AddHistogram("batch_size", "Items.", {"model", "kind"}, {4});
  family->WithLabels({"vit", "image"})->Observe(3);
  family->WithLabels({"rn50", "text"})->Observe(8);
  EXPECT_EQ(registry.Exposition(),
            "# HELP batch_size Items.\n"
            "# TYPE batch_size histogram\n"
            "batch_size_bucket{model=\"rn50\",kind=\"text\",le=\"4\"} 0\n"
            "batch_size_bucket{model=\"rn50\",kind=\"text\",le=\"+Inf\"} 1\n"
            "batch_size_sum{model=\"rn50\",kind=\"text\"} 8\n"
            "batch_size_count{model=\"rn50\",kind=\"text\"} 1\n"
            "batch_size_bucket{model=\"vit\",kind=\"image\",le=\"4\"} 1\n"
            "batch_size_bucket{model=\"vit\",kind=\"image\",le=\"+Inf\"} 1\n"
            "batch_size_sum{model=\"vit\",kind=\"image\"} 3\n"
            "batch_size_count{model=\"vit\",kind=\"image\"} 1\n");
}

TEST(MetricsExpositionTest, HistogramIgnoresNaNAndPutsInfinityInTheLastBucket) {
  MetricsRegistry registry;
  Histogram* histogram = registry.AddHistogram("h", "", {}, {1})->WithLabels({});
  histogram->Observe(kNaN);
  EXPECT_EQ(histogram->Count(), 0u);
  histogram->Observe(kInf);
  histogram->Observe(-kInf);
  EXPECT_EQ(histogram->BucketCounts(), (std::vector<uint64_t>{1, 2}));
  EXPECT_TRUE(std::isnan(histogram->Sum()));  // inf + -inf, as Prometheus would have it
}

TEST(MetricsExpositionTest, NumbersAreFormattedAsTheGoClientDoes) {
  // Expected strings are Go's strconv.FormatFloat(v, 'g', -1, 64).
  EXPECT_EQ(GaugeText(0), "0");
  EXPECT_EQ(GaugeText(-0.0), "0");
  EXPECT_EQ(GaugeText(1), "1");
  EXPECT_EQ(GaugeText(-2.5), "-2.5");
  EXPECT_EQ(GaugeText(0.1), "0.1");
  EXPECT_EQ(GaugeText(0.0005), "0.0005");
  EXPECT_EQ(GaugeText(0.00001), "1e-05");
  EXPECT_EQ(GaugeText(0.000123), "0.000123");
  EXPECT_EQ(GaugeText(100000), "100000");
  EXPECT_EQ(GaugeText(123456.5), "123456.5");
  EXPECT_EQ(GaugeText(1e6), "1e+06");
  EXPECT_EQ(GaugeText(1234567), "1.234567e+06");
  EXPECT_EQ(GaugeText(1e21), "1e+21");
  EXPECT_EQ(GaugeText(1.5e300), "1.5e+300");
  EXPECT_EQ(GaugeText(0.1 + 0.2), "0.30000000000000004");
  EXPECT_EQ(GaugeText(kInf), "+Inf");
  EXPECT_EQ(GaugeText(-kInf), "-Inf");
  EXPECT_EQ(GaugeText(kNaN), "NaN");
}

TEST(MetricsExpositionTest, LeLabelsUseTheSameNumberFormat) {
  MetricsRegistry registry;
  registry.AddHistogram("h", "", {}, {0.0005, 0.001, 1e6})->WithLabels({});
  const std::string text = registry.Exposition();
  EXPECT_NE(text.find("h_bucket{le=\"0.0005\"} 0\n"), std::string::npos) << text;
  EXPECT_NE(text.find("h_bucket{le=\"0.001\"} 0\n"), std::string::npos) << text;
  EXPECT_NE(text.find("h_bucket{le=\"1e+06\"} 0\n"), std::string::npos) << text;
}

TEST(MetricsExpositionTest, FamiliesInRegistrationOrder) {
  MetricsRegistry registry;
  registry.AddCounter("zeta_total", "z");
  registry.AddGauge("alpha", "a");
  registry.AddCounter("mid_total", "m");
  std::vector<std::string> types;
  for (absl::string_view line : absl::StrSplit(registry.Exposition(), '\n')) {
    if (absl::StartsWith(line, "# TYPE ")) types.emplace_back(line);
  }
  EXPECT_EQ(types, (std::vector<std::string>{"# TYPE zeta_total counter", "# TYPE alpha gauge",
                                             "# TYPE mid_total counter"}));
}

TEST(MetricsExpositionTest, LabelledFamilyAppearsWithItsFirstSeries) {
  MetricsRegistry registry;
  GaugeFamily* family = registry.AddGauge("queue_depth", "Waiting.", {"model"});
  EXPECT_EQ(registry.Exposition(), "");
  family->WithLabels({"m"});
  EXPECT_EQ(registry.Exposition(),
            "# HELP queue_depth Waiting.\n"
            "# TYPE queue_depth gauge\n"
            "queue_depth{model=\"m\"} 0\n");
}

// ---------------------------------------------------------------------------
// Series.

TEST(MetricsSeriesTest, CounterIgnoresNegativeAndNaNAmounts) {
  MetricsRegistry registry;
  Counter* counter = registry.AddCounter("c_total", "")->WithLabels({});
  counter->Increment(2);
  counter->Increment(-1);
  counter->Increment(kNaN);
  EXPECT_EQ(counter->Value(), 2);
}

TEST(MetricsSeriesTest, GaugeSetsAndAdds) {
  MetricsRegistry registry;
  Gauge* gauge = registry.AddGauge("g", "")->WithLabels({});
  gauge->Set(5);
  gauge->Add(-7.5);
  EXPECT_EQ(gauge->Value(), -2.5);
}

TEST(MetricsSeriesTest, WithLabelsReturnsTheSameSeriesForTheSameValues) {
  MetricsRegistry registry;
  CounterFamily* family = registry.AddCounter("c_total", "", {"a"});
  EXPECT_EQ(family->WithLabels({"x"}), family->WithLabels({"x"}));
  EXPECT_NE(family->WithLabels({"x"}), family->WithLabels({"y"}));
}

// ---------------------------------------------------------------------------
// Concurrency.

constexpr int kThreads = 8;
constexpr int kPerThread = 100000;

TEST(MetricsConcurrencyTest, ConcurrentIncrementsGiveTheExactTotal) {
  MetricsRegistry registry;
  Counter* counter = registry.AddCounter("c_total", "")->WithLabels({});
  Gauge* gauge = registry.AddGauge("g", "")->WithLabels({});
  Histogram* histogram = registry.AddHistogram("h", "", {}, {0.5, 1.5})->WithLabels({});
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        counter->Increment();
        gauge->Add(t % 2 == 0 ? 1 : -1);
        histogram->Observe(1);
      }
    });
  }
  // Scrapes racing with the updates must not disturb them.
  for (int i = 0; i < 20; ++i) EXPECT_FALSE(registry.Exposition().empty());
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(counter->Value(), kThreads * kPerThread);
  EXPECT_EQ(gauge->Value(), 0);
  EXPECT_EQ(histogram->Count(), static_cast<uint64_t>(kThreads * kPerThread));
  EXPECT_EQ(histogram->Sum(), kThreads * kPerThread);
  EXPECT_EQ(histogram->BucketCounts(),
            (std::vector<uint64_t>{0, kThreads * kPerThread, kThreads * kPerThread}));
}

TEST(MetricsConcurrencyTest, ConcurrentWithLabelsAgreeOnOneSeries) {
  MetricsRegistry registry;
  CounterFamily* family = registry.AddCounter("c_total", "", {"worker"});
  std::vector<Counter*> seen(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 1000; ++i) {
        Counter* counter = family->WithLabels({absl::StrCat("w", i % 10)});
        counter->Increment();
        if (i == 5) seen[t] = counter;
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  for (int t = 1; t < kThreads; ++t) EXPECT_EQ(seen[t], seen[0]);
  for (int w = 0; w < 10; ++w) {
    EXPECT_EQ(family->WithLabels({absl::StrCat("w", w)})->Value(), kThreads * 100) << w;
  }
}

// ---------------------------------------------------------------------------
// The global registry.

TEST(GlobalMetricsTest, IsASingleton) {
  MetricsRegistry* from_thread = nullptr;
  std::thread thread([&from_thread] { from_thread = &GlobalMetrics(); });
  thread.join();
  EXPECT_EQ(&GlobalMetrics(), &GlobalMetrics());
  EXPECT_EQ(from_thread, &GlobalMetrics());
  CounterFamily* family = GlobalMetrics().AddCounter("oclip_metrics_test_singleton_total", "t");
  EXPECT_EQ(from_thread->AddCounter("oclip_metrics_test_singleton_total", "t"), family);
  EXPECT_NE(GlobalMetrics().Exposition().find("oclip_metrics_test_singleton_total 0\n"),
            std::string::npos);
}

// ---------------------------------------------------------------------------
// Registration.

TEST(MetricsRegistrationTest, SameNameTypeAndLabelsSharesTheFamily) {
  MetricsRegistry registry;
  CounterFamily* first = registry.AddCounter("items_total", "First help.", {"model"});
  CounterFamily* second = registry.AddCounter("items_total", "Other help.", {"model"});
  EXPECT_EQ(first, second);
  absl::StatusOr<CounterFamily*> third = registry.TryAddCounter("items_total", "", {"model"});
  ASSERT_TRUE(third.ok()) << third.status();
  EXPECT_EQ(*third, first);
  HistogramFamily* h1 = registry.AddHistogram("lat", "", {}, {1, 2});
  // A trailing +Inf is implied, so these are the same buckets.
  EXPECT_EQ(registry.AddHistogram("lat", "", {}, {1, 2, kInf}), h1);
  EXPECT_EQ(h1->bucket_upper_bounds(), (std::vector<double>{1, 2}));

  first->WithLabels({"m"})->Increment();
  second->WithLabels({"m"})->Increment();
  const std::string text = registry.Exposition();
  EXPECT_NE(text.find("# HELP items_total First help.\n"), std::string::npos) << text;
  EXPECT_EQ(text.find("Other help."), std::string::npos) << text;
  EXPECT_NE(text.find("items_total{model=\"m\"} 2\n"), std::string::npos) << text;
}

TEST(MetricsRegistrationTest, ConflictingRegistrationIsAlreadyExists) {
  MetricsRegistry registry;
  registry.AddCounter("c_total", "", {"a"});
  registry.AddHistogram("lat", "", {}, {1, 2});
  registry.AddGauge("q_sum", "");
  const std::string before = registry.Exposition();

  EXPECT_EQ(registry.TryAddGauge("c_total", "", {"a"}).status().code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(registry.TryAddCounter("c_total", "", {"b"}).status().code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(registry.TryAddCounter("c_total", "", {}).status().code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(registry.TryAddHistogram("lat", "", {}, {1, 3}).status().code(),
            absl::StatusCode::kAlreadyExists);
  // Sample names that clash with a histogram's _bucket/_sum/_count.
  EXPECT_EQ(registry.TryAddCounter("lat_count", "").status().code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(registry.TryAddHistogram("q", "", {}, {1}).status().code(),
            absl::StatusCode::kAlreadyExists);
  absl::Status status = registry.TryAddGauge("c_total", "", {"a"}).status();
  EXPECT_NE(status.message().find("c_total"), absl::string_view::npos) << status;
  EXPECT_NE(status.message().find("counter"), absl::string_view::npos) << status;

  EXPECT_EQ(registry.Exposition(), before);
}

TEST(MetricsRegistrationTest, InvalidNamesAreInvalidArgument) {
  MetricsRegistry registry;
  for (const char* name : {"", "1abc", "a-b", "a b", "caf\xc3\xa9", "a{b}", "a\"b"}) {
    EXPECT_EQ(registry.TryAddCounter(name, "").status().code(), absl::StatusCode::kInvalidArgument)
        << name;
  }
  for (const char* name : {"a", "_x", ":x", "oclip:rule:rate5m", "x_1"}) {
    EXPECT_TRUE(registry.TryAddGauge(name, "").ok()) << name;
  }
  using Labels = std::vector<std::string>;
  for (const Labels& labels : {Labels{""}, Labels{"1a"}, Labels{"a-b"}, Labels{"a:b"},
                               Labels{"__name__"}, Labels{"__x"}, Labels{"a", "b", "a"}}) {
    EXPECT_EQ(registry.TryAddCounter("labelled_total", "", labels).status().code(),
              absl::StatusCode::kInvalidArgument)
        << absl::StrJoin(labels, ",");
  }
  EXPECT_EQ(registry.TryAddHistogram("h", "", {"le"}, {1}).status().code(),
            absl::StatusCode::kInvalidArgument);
  // "le" is only reserved on histograms.
  EXPECT_TRUE(registry.TryAddGauge("g_le", "", {"le", "_a", "b_2"}).ok());
  // Nothing was registered by the failures.
  EXPECT_TRUE(registry.TryAddGauge("labelled_total", "", {"x"}).ok());
}

TEST(MetricsRegistrationTest, InvalidBucketsAreInvalidArgument) {
  MetricsRegistry registry;
  using Bounds = std::vector<double>;
  for (const Bounds& bounds : {Bounds{1, 1}, Bounds{2, 1}, Bounds{kNaN}, Bounds{-kInf, 0},
                               Bounds{1, kInf, 2}, Bounds{kInf, kInf}}) {
    EXPECT_EQ(registry.TryAddHistogram("h", "", {}, bounds).status().code(),
              absl::StatusCode::kInvalidArgument);
  }
  absl::StatusOr<HistogramFamily*> only_inf = registry.TryAddHistogram("h", "", {}, {});
  ASSERT_TRUE(only_inf.ok()) << only_inf.status();
  (*only_inf)->WithLabels({})->Observe(3);
  EXPECT_NE(registry.Exposition().find("h_bucket{le=\"+Inf\"} 1\n"), std::string::npos);
}

// ---------------------------------------------------------------------------
// Misuse: an assert in builds without NDEBUG, a working but unexported
// stand-in otherwise.

TEST(MetricsMisuseDeathTest, AddWithAConflictGivesADetachedFamily) {
  MetricsRegistry registry;
  registry.AddCounter("c_total", "", {"a"})->WithLabels({"x"})->Increment();
  const std::string before = registry.Exposition();
  GaugeFamily* gauge = nullptr;
  EXPECT_DEBUG_DEATH(gauge = registry.AddGauge("c_total", "", {"a"}), "metrics API misuse");
  HistogramFamily* histogram = nullptr;
  EXPECT_DEBUG_DEATH(histogram = registry.AddHistogram("bad name", "", {}, {2, 1}),
                     "metrics API misuse");
  if (kAssertsEnabled) return;  // the stand-ins exist in NDEBUG builds only
  ASSERT_NE(gauge, nullptr);
  gauge->WithLabels({"x"})->Set(42);
  EXPECT_EQ(gauge->WithLabels({"x"})->Value(), 42);
  ASSERT_NE(histogram, nullptr);
  histogram->WithLabels({})->Observe(1);
  EXPECT_EQ(histogram->WithLabels({})->Count(), 1u);
  EXPECT_EQ(registry.Exposition(), before);
}

TEST(MetricsMisuseDeathTest, WrongLabelCountGivesADetachedSeries) {
  MetricsRegistry registry;
  CounterFamily* family = registry.AddCounter("c_total", "", {"model", "code"});
  family->WithLabels({"m", "OK"})->Increment();
  const std::string before = registry.Exposition();
  Counter* too_few = nullptr;
  EXPECT_DEBUG_DEATH(too_few = family->WithLabels({"m"}), "wrong number of label values");
  HistogramFamily* histogram = registry.AddHistogram("h", "", {}, {1});
  Histogram* too_many = nullptr;
  EXPECT_DEBUG_DEATH(too_many = histogram->WithLabels({"x"}), "wrong number of label values");
  if (kAssertsEnabled) return;  // the stand-ins exist in NDEBUG builds only
  const std::string with_histogram = registry.Exposition();
  ASSERT_NE(too_few, nullptr);
  too_few->Increment(5);
  EXPECT_EQ(too_few->Value(), 5);
  EXPECT_NE(too_few, family->WithLabels({"m", "OK"}));
  ASSERT_NE(too_many, nullptr);
  too_many->Observe(0.5);
  EXPECT_EQ(family->WithLabels({"m", "OK"})->Value(), 1);
  EXPECT_EQ(registry.Exposition(), with_histogram);
  EXPECT_EQ(with_histogram.compare(0, before.size(), before), 0);
}

// ---------------------------------------------------------------------------
// Bucket helpers.

TEST(MetricsBucketsTest, ExponentialBuckets) {
  const std::vector<double> latency = ExponentialBuckets(0.0005, 2, 17);
  ASSERT_EQ(latency.size(), 17u);
  EXPECT_EQ(latency.front(), 0.0005);
  EXPECT_EQ(latency[1], 0.001);
  EXPECT_EQ(latency.back(), 32.768);
  // Rounded to what they stand for: 0.1 * 3 is 0.30000000000000004 in doubles.
  EXPECT_EQ(ExponentialBuckets(0.1, 3, 4), (std::vector<double>{0.1, 0.3, 0.9, 2.7}));
  EXPECT_EQ(ExponentialBuckets(1, 2, 4), (std::vector<double>{1, 2, 4, 8}));
}

TEST(MetricsBucketsTest, LinearBuckets) {
  // 0.1 + 0.1 * 2 is 0.30000000000000004 in doubles.
  EXPECT_EQ(LinearBuckets(0.1, 0.1, 3), (std::vector<double>{0.1, 0.2, 0.3}));
  EXPECT_EQ(LinearBuckets(-1, 1, 3), (std::vector<double>{-1, 0, 1}));
}

TEST(MetricsBucketsDeathTest, InvalidArgumentsGiveNoBuckets) {
  std::vector<double> buckets = {1};
  EXPECT_DEBUG_DEATH(buckets = ExponentialBuckets(0, 2, 3), "metrics API misuse");
  EXPECT_TRUE(buckets.empty() || kAssertsEnabled);
  buckets = {1};
  EXPECT_DEBUG_DEATH(buckets = ExponentialBuckets(1, 1, 3), "metrics API misuse");
  EXPECT_TRUE(buckets.empty() || kAssertsEnabled);
  buckets = {1};
  EXPECT_DEBUG_DEATH(buckets = ExponentialBuckets(1, 2, 0), "metrics API misuse");
  EXPECT_TRUE(buckets.empty() || kAssertsEnabled);
  buckets = {1};
  EXPECT_DEBUG_DEATH(buckets = ExponentialBuckets(1, 10, 400), "metrics API misuse");  // overflow
  EXPECT_TRUE(buckets.empty() || kAssertsEnabled);
  buckets = {1};
  EXPECT_DEBUG_DEATH(buckets = LinearBuckets(0, 0, 3), "metrics API misuse");
  EXPECT_TRUE(buckets.empty() || kAssertsEnabled);
}

}  // namespace
}  // namespace oclip
