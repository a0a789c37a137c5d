// Prometheus metrics: counters, gauges and histograms with labels, kept in a
// registry that renders the Prometheus text exposition format (version 0.0.4).
//
// prometheus-cpp is not packaged for Debian 12, so oclip keeps this small
// implementation. A MetricsRegistry owns metric *families* (a name, a help
// text, label names); a family owns one *series* (Counter, Gauge or Histogram)
// per distinct tuple of label values, created on first use by WithLabels().
// Components register their families at start-up and keep the pointers; hot
// paths either cache the series pointer or call WithLabels() (a map lookup
// under a reader lock) and then update it with lock-free atomics.
//
// Contract:
//  - Every pointer handed out (families, series) stays valid for the
//    registry's lifetime. Series are never removed.
//  - Registering a name again returns the existing family when the type and
//    label names (for histograms also the buckets) match, so that two
//    components can share a family; the first registration's help text wins.
//  - Names: metric names match [a-zA-Z_:][a-zA-Z0-9_:]*; label names match
//    [a-zA-Z_][a-zA-Z0-9_]*, do not start with "__" (reserved by Prometheus),
//    are not repeated, and a histogram has no label named "le". Histogram
//    bucket bounds are finite and strictly increasing (a trailing +Inf is
//    accepted and dropped: the +Inf bucket is always there). Label values and
//    help texts are arbitrary bytes (UTF-8 expected) and are escaped on output.
//  - Programming errors never crash a release build and are never silent:
//     * TryAddCounter/TryAddGauge/TryAddHistogram return INVALID_ARGUMENT for
//       an invalid name, label names or buckets, and ALREADY_EXISTS for a name
//       registered with another type, other label names or other buckets (or
//       whose exposed series names, e.g. `x_count` of a histogram `x`, clash
//       with another family's).
//     * AddCounter/AddGauge/AddHistogram never return null: on those errors
//       they log the error and return a *detached* family, which works but is
//       never exported; builds without NDEBUG also fail an assert.
//     * WithLabels() with the wrong number of label values logs an error (once
//       per family) and returns the family's detached series, which works but
//       is never exported; builds without NDEBUG also fail an assert.
//  - Exposition(): `# HELP` and `# TYPE` lines, then the samples; families in
//    registration order, a family's series in byte-wise lexicographic order of
//    their label values, labels in the order of the family's label names
//    (`le` last on histogram buckets). Families without any series yet are
//    left out. Histograms expose cumulative `_bucket` samples ending with
//    le="+Inf", then `_sum` and `_count`. Numbers are formatted as Go's
//    strconv.FormatFloat(v, 'g', -1, 64) does (as the Go client writes them:
//    "0.0005", "1e-05", "1.234567e+06", "+Inf", "NaN"), so `le` labels match
//    other exporters' and dashboards'.
//
// Thread safety: every class here is thread-safe. Series updates are relaxed
// atomics (statistics, not synchronization): after threads are joined their
// updates are all visible. Exposition() reads the atomics one by one while
// updates go on, so a scrape may see a histogram's `_sum` from slightly before
// or after its buckets; its `_count` always equals its +Inf bucket.

#ifndef OCLIP_CORE_METRICS_H_
#define OCLIP_CORE_METRICS_H_

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace oclip {

// A monotonically increasing value (requests served, items dropped).
class Counter {
 public:
  Counter() = default;
  Counter(const Counter&) = delete;
  Counter& operator=(const Counter&) = delete;

  // Adds `amount`. A counter never decreases: negative and NaN amounts are
  // ignored.
  void Increment(double amount = 1.0);
  double Value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

// A value that goes up and down (queue depth, model readiness).
class Gauge {
 public:
  Gauge() = default;
  Gauge(const Gauge&) = delete;
  Gauge& operator=(const Gauge&) = delete;

  void Set(double value) { value_.store(value, std::memory_order_relaxed); }
  void Add(double delta);
  double Value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

// Counts observations into buckets with fixed upper bounds (latencies, batch
// sizes). Made by HistogramFamily, which validated the bounds.
class Histogram {
 public:
  Histogram(const Histogram&) = delete;
  Histogram& operator=(const Histogram&) = delete;

  // Counts `value` in the first bucket whose upper bound is >= value (the +Inf
  // bucket when none is) and adds it to the sum. NaN is ignored: it would turn
  // the sum into NaN for the rest of the process.
  void Observe(double value);

  // The number of observations (equal to BucketCounts().back()).
  uint64_t Count() const;
  double Sum() const { return sum_.load(std::memory_order_relaxed); }
  // Cumulative counts, as exported: element i counts the observations <=
  // bucket_upper_bounds()[i]; the last element (the +Inf bucket) counts all.
  // Size: bucket_upper_bounds().size() + 1.
  std::vector<uint64_t> BucketCounts() const;
  // Finite, strictly increasing; +Inf is implied.
  const std::vector<double>& bucket_upper_bounds() const { return upper_bounds_; }

 private:
  friend class HistogramFamily;
  explicit Histogram(std::vector<double> upper_bounds);

  const std::vector<double> upper_bounds_;
  // Per-bucket (not cumulative) counts, so that Observe() touches one of
  // them; the last one is the +Inf bucket.
  std::vector<std::atomic<uint64_t>> bucket_counts_;
  std::atomic<double> sum_{0.0};
};

enum class MetricType { kCounter, kGauge, kHistogram };

// "counter", "gauge", "histogram": the exposition format's type names.
const char* MetricTypeName(MetricType type);

// What the three family types share; the registry exports families through
// it.
class MetricFamily {
 public:
  virtual ~MetricFamily() = default;
  MetricFamily(const MetricFamily&) = delete;
  MetricFamily& operator=(const MetricFamily&) = delete;

  const std::string& name() const { return name_; }
  const std::string& help() const { return help_; }
  MetricType type() const { return type_; }
  const std::vector<std::string>& label_names() const { return label_names_; }

  // Appends the family in exposition format (see the file comment): nothing
  // when it has no series yet.
  virtual void AppendExposition(std::string* out) const = 0;

 protected:
  MetricFamily(std::string name, std::string help, MetricType type,
               std::vector<std::string> label_names);

  // Whether `label_values` has one value per label name; reports the misuse
  // (see the file comment) when it has not.
  bool CheckLabelValues(const std::vector<std::string>& label_values) const;

 private:
  const std::string name_;
  const std::string help_;
  const MetricType type_;
  const std::vector<std::string> label_names_;
  mutable std::atomic<bool> misuse_reported_{false};
};

namespace metrics_internal {

// The label values -> series map behind each family type.
template <typename Series>
class SeriesMap {
 public:
  // The series for `label_values`, made by `make()` (returning
  // std::unique_ptr<Series>) the first time.
  template <typename MakeSeries>
  Series* Get(const std::vector<std::string>& label_values, MakeSeries make)
      ABSL_LOCKS_EXCLUDED(mu_) {
    {
      absl::ReaderMutexLock lock(&mu_);
      auto it = series_.find(label_values);
      if (it != series_.end()) return it->second.get();
    }
    absl::MutexLock lock(&mu_);
    std::unique_ptr<Series>& slot = series_[label_values];
    if (slot == nullptr) slot = make();
    return slot.get();
  }

  // Calls fn(label_values, series) for every series in label-value order.
  // `fn` must not call back into this map.
  template <typename Fn>
  void ForEach(Fn fn) const ABSL_LOCKS_EXCLUDED(mu_) {
    absl::ReaderMutexLock lock(&mu_);
    for (const auto& [label_values, series] : series_) fn(label_values, *series);
  }

 private:
  mutable absl::Mutex mu_;
  std::map<std::vector<std::string>, std::unique_ptr<Series>> series_ ABSL_GUARDED_BY(mu_);
};

}  // namespace metrics_internal

class CounterFamily final : public MetricFamily {
 public:
  // The series for `label_values`, given in the order of label_names().
  Counter* WithLabels(const std::vector<std::string>& label_values);
  void AppendExposition(std::string* out) const override;

 private:
  friend class MetricsRegistry;
  CounterFamily(std::string name, std::string help, std::vector<std::string> label_names);

  metrics_internal::SeriesMap<Counter> series_;
  Counter detached_;  // for WithLabels() calls with the wrong label count
};

class GaugeFamily final : public MetricFamily {
 public:
  // The series for `label_values`, given in the order of label_names().
  Gauge* WithLabels(const std::vector<std::string>& label_values);
  void AppendExposition(std::string* out) const override;

 private:
  friend class MetricsRegistry;
  GaugeFamily(std::string name, std::string help, std::vector<std::string> label_names);

  metrics_internal::SeriesMap<Gauge> series_;
  Gauge detached_;  // for WithLabels() calls with the wrong label count
};

class HistogramFamily final : public MetricFamily {
 public:
  // The series for `label_values`, given in the order of label_names().
  Histogram* WithLabels(const std::vector<std::string>& label_values);
  void AppendExposition(std::string* out) const override;

  // Finite, strictly increasing; +Inf is implied.
  const std::vector<double>& bucket_upper_bounds() const { return upper_bounds_; }

 private:
  friend class MetricsRegistry;
  HistogramFamily(std::string name, std::string help, std::vector<std::string> label_names,
                  std::vector<double> upper_bounds);

  std::unique_ptr<Histogram> NewSeries() const;

  const std::vector<double> upper_bounds_;
  metrics_internal::SeriesMap<Histogram> series_;
  Histogram detached_;  // for WithLabels() calls with the wrong label count
};

class MetricsRegistry {
 public:
  MetricsRegistry() = default;
  MetricsRegistry(const MetricsRegistry&) = delete;
  MetricsRegistry& operator=(const MetricsRegistry&) = delete;

  // Register (or find, see the file comment) a family. Families without
  // labels get their single series now, so that it is exported (as 0) before
  // its first update. Never null: errors give a detached family.
  CounterFamily* AddCounter(std::string name, std::string help,
                            std::vector<std::string> label_names = {});
  GaugeFamily* AddGauge(std::string name, std::string help,
                        std::vector<std::string> label_names = {});
  HistogramFamily* AddHistogram(std::string name, std::string help,
                                std::vector<std::string> label_names,
                                std::vector<double> bucket_upper_bounds);

  // The same, with errors as a Status (INVALID_ARGUMENT, ALREADY_EXISTS) and
  // nothing registered on error: for names built at run time.
  absl::StatusOr<CounterFamily*> TryAddCounter(std::string name, std::string help,
                                               std::vector<std::string> label_names = {});
  absl::StatusOr<GaugeFamily*> TryAddGauge(std::string name, std::string help,
                                           std::vector<std::string> label_names = {});
  absl::StatusOr<HistogramFamily*> TryAddHistogram(std::string name, std::string help,
                                                   std::vector<std::string> label_names,
                                                   std::vector<double> bucket_upper_bounds);

  // Every registered family in Prometheus text format 0.0.4 (see the file
  // comment). Serve with Content-Type "text/plain; version=0.0.4; charset=utf-8".
  std::string Exposition() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  absl::StatusOr<MetricFamily*> Register(MetricType type, const std::string& name,
                                         const std::string& help,
                                         const std::vector<std::string>& label_names,
                                         const std::vector<double>& bucket_upper_bounds)
      ABSL_LOCKS_EXCLUDED(mu_);
  // Reports `error` and returns a new family that is never exported.
  MetricFamily* Detached(const absl::Status& error, MetricType type, std::string name,
                         std::string help, std::vector<std::string> label_names,
                         std::vector<double> bucket_upper_bounds) ABSL_LOCKS_EXCLUDED(mu_);

  mutable absl::Mutex mu_;
  // In registration order.
  std::vector<std::unique_ptr<MetricFamily>> families_ ABSL_GUARDED_BY(mu_);
  std::vector<std::unique_ptr<MetricFamily>> detached_ ABSL_GUARDED_BY(mu_);
};

// The process-wide registry (the one allowed global besides the logger):
// created on first use, never destroyed, so that threads still updating
// metrics during exit never touch a destroyed registry.
MetricsRegistry& GlobalMetrics();

// Bucket bounds start * factor^i for i in [0, count), each rounded to 15
// significant digits so that labels read as written (0.3, not
// 0.30000000000000004). E.g. latency in seconds 0.0005 .. 32.768:
// ExponentialBuckets(0.0005, 2, 17). Requires start > 0, factor > 1,
// count >= 1 and finite results; otherwise logs an error and returns {} (only
// the +Inf bucket), and fails an assert in builds without NDEBUG.
std::vector<double> ExponentialBuckets(double start, double factor, int count);

// Bucket bounds start + width * i for i in [0, count), rounded likewise.
// Requires width > 0, count >= 1 and finite results (same errors as above).
std::vector<double> LinearBuckets(double start, double width, int count);

}  // namespace oclip

#endif  // OCLIP_CORE_METRICS_H_
