#include "core/metrics.h"

#include <algorithm>
#include <cassert>
#include <charconv>
#include <cmath>
#include <cstddef>
#include <system_error>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "core/logging.h"
#include "core/status.h"

namespace oclip {
namespace {

// std::atomic<double>::fetch_add is C++20.
void AtomicAdd(std::atomic<double>* target, double delta) {
  double current = target->load(std::memory_order_relaxed);
  while (!target->compare_exchange_weak(current, current + delta, std::memory_order_relaxed)) {
  }
}

// Misuse is a bug in the calling code: loud in debug builds, logged but
// harmless in release builds (a bad metric must not take the server down).
void ReportMisuse(absl::string_view message) {
  LogError(absl::StrCat("metrics API misuse: ", message));
  assert(false && "metrics API misuse (see the error logged above)");
}

// ---------------------------------------------------------------------------
// Exposition format.

// Go's strconv.FormatFloat(value, 'g', -1, 64), which the Go client uses for
// sample values and `le` labels: shortest round-trip digits, exponent form
// when the decimal exponent is < -4 or >= 6. Matching it keeps `le` label
// values identical to other exporters', which dashboards select on.
void AppendNumber(double value, std::string* out) {
  if (std::isnan(value)) {
    out->append("NaN");
    return;
  }
  if (std::isinf(value)) {
    out->append(value > 0 ? "+Inf" : "-Inf");
    return;
  }
  if (value == 0) {  // -0 too, as the Go client writes it
    out->push_back('0');
    return;
  }
  char buffer[64];
  // Shortest round-trip digits as "[-]d[.ddd]e(+|-)dd[d]".
  const std::to_chars_result result =
      std::to_chars(buffer, buffer + sizeof(buffer), value, std::chars_format::scientific);
  const absl::string_view text(buffer, static_cast<size_t>(result.ptr - buffer));
  const size_t e = text.find('e');
  int exponent = 0;
  std::from_chars(text.data() + e + 2, text.data() + text.size(), exponent);
  if (text[e + 1] == '-') exponent = -exponent;
  if (exponent < -4 || exponent >= 6) {
    out->append(text.data(), text.size());  // already Go's %e layout
    return;
  }
  absl::string_view mantissa = text.substr(0, e);
  if (mantissa.front() == '-') {
    out->push_back('-');
    mantissa.remove_prefix(1);
  }
  std::string digits;
  for (char c : mantissa) {
    if (c != '.') digits.push_back(c);
  }
  const int point = exponent + 1;  // digits before the decimal point
  const int num_digits = static_cast<int>(digits.size());
  if (point <= 0) {
    out->append("0.");
    out->append(static_cast<size_t>(-point), '0');
    out->append(digits);
  } else if (point >= num_digits) {
    out->append(digits);
    out->append(static_cast<size_t>(point - num_digits), '0');
  } else {
    out->append(digits, 0, static_cast<size_t>(point));
    out->push_back('.');
    out->append(digits, static_cast<size_t>(point), std::string::npos);
  }
}

std::string FormatNumber(double value) {
  std::string text;
  AppendNumber(value, &text);
  return text;
}

// Help text: backslash and line feed are escaped.
void AppendEscapedHelp(absl::string_view help, std::string* out) {
  for (char c : help) {
    if (c == '\\') {
      out->append("\\\\");
    } else if (c == '\n') {
      out->append("\\n");
    } else {
      out->push_back(c);
    }
  }
}

// Label values: backslash, double quote and line feed are escaped.
void AppendEscapedLabelValue(absl::string_view value, std::string* out) {
  for (char c : value) {
    if (c == '\\') {
      out->append("\\\\");
    } else if (c == '"') {
      out->append("\\\"");
    } else if (c == '\n') {
      out->append("\\n");
    } else {
      out->push_back(c);
    }
  }
}

void AppendHeader(const MetricFamily& family, std::string* out) {
  absl::StrAppend(out, "# HELP ", family.name(), " ");
  AppendEscapedHelp(family.help(), out);
  absl::StrAppend(out, "\n# TYPE ", family.name(), " ", MetricTypeName(family.type()), "\n");
}

// `name{label="value",...,extra_label="extra_value"} ` without the value;
// `extra_label` may be empty.
void AppendSeriesName(absl::string_view name, const std::vector<std::string>& label_names,
                      const std::vector<std::string>& label_values, absl::string_view extra_label,
                      absl::string_view extra_value, std::string* out) {
  out->append(name.data(), name.size());
  if (!label_names.empty() || !extra_label.empty()) {
    out->push_back('{');
    for (size_t i = 0; i < label_names.size(); ++i) {
      if (i > 0) out->push_back(',');
      absl::StrAppend(out, label_names[i], "=\"");
      AppendEscapedLabelValue(label_values[i], out);
      out->push_back('"');
    }
    if (!extra_label.empty()) {
      if (!label_names.empty()) out->push_back(',');
      absl::StrAppend(out, extra_label, "=\"");
      AppendEscapedLabelValue(extra_value, out);
      out->push_back('"');
    }
    out->push_back('}');
  }
  out->push_back(' ');
}

// ---------------------------------------------------------------------------
// Validation.

bool IsAsciiLetter(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool IsAsciiDigit(char c) { return c >= '0' && c <= '9'; }

bool IsValidMetricName(absl::string_view name) {
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    if (!(IsAsciiLetter(c) || c == '_' || c == ':' || (i > 0 && IsAsciiDigit(c)))) return false;
  }
  return true;
}

bool IsValidLabelName(absl::string_view name) {
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    if (!(IsAsciiLetter(c) || c == '_' || (i > 0 && IsAsciiDigit(c)))) return false;
  }
  return true;
}

std::string Describe(MetricType type, const std::string& name,
                     const std::vector<std::string>& label_names) {
  return absl::StrCat(MetricTypeName(type), " \"", name, "\" with labels (",
                      absl::StrJoin(label_names, ", "), ")");
}

absl::Status ValidateNames(MetricType type, const std::string& name,
                           const std::vector<std::string>& label_names) {
  if (!IsValidMetricName(name)) {
    return absl::InvalidArgumentError(
        absl::StrCat("invalid metric name \"", name, "\": expected [a-zA-Z_:][a-zA-Z0-9_:]*"));
  }
  for (size_t i = 0; i < label_names.size(); ++i) {
    const std::string& label = label_names[i];
    if (!IsValidLabelName(label)) {
      return absl::InvalidArgumentError(absl::StrCat("metric \"", name, "\": invalid label name \"",
                                                     label, "\": expected [a-zA-Z_][a-zA-Z0-9_]*"));
    }
    if (label.compare(0, 2, "__") == 0) {
      return absl::InvalidArgumentError(absl::StrCat("metric \"", name, "\": label name \"", label,
                                                     "\" is reserved (starts with \"__\")"));
    }
    if (type == MetricType::kHistogram && label == "le") {
      return absl::InvalidArgumentError(
          absl::StrCat("histogram \"", name, "\": label name \"le\" is reserved for buckets"));
    }
    if (std::find(label_names.begin(), label_names.begin() + static_cast<std::ptrdiff_t>(i),
                  label) != label_names.begin() + static_cast<std::ptrdiff_t>(i)) {
      return absl::InvalidArgumentError(
          absl::StrCat("metric \"", name, "\": label name \"", label, "\" is repeated"));
    }
  }
  return absl::OkStatus();
}

// The bounds without a trailing +Inf (always implied), or INVALID_ARGUMENT.
absl::StatusOr<std::vector<double>> NormalizeBuckets(const std::string& name,
                                                     std::vector<double> bounds) {
  if (!bounds.empty() && std::isinf(bounds.back()) && bounds.back() > 0) bounds.pop_back();
  for (size_t i = 0; i < bounds.size(); ++i) {
    if (!std::isfinite(bounds[i])) {
      return absl::InvalidArgumentError(absl::StrCat("histogram \"", name, "\": bucket bound ",
                                                     FormatNumber(bounds[i]), " is not finite"));
    }
    if (i > 0 && !(bounds[i - 1] < bounds[i])) {
      return absl::InvalidArgumentError(
          absl::StrCat("histogram \"", name, "\": bucket bounds must increase strictly, got ",
                       FormatNumber(bounds[i - 1]), " then ", FormatNumber(bounds[i])));
    }
  }
  return bounds;
}

// The metric names a family's samples use: two families clash when these
// overlap, since a scraper could not tell their samples apart.
std::vector<std::string> SampleNames(MetricType type, const std::string& name) {
  if (type != MetricType::kHistogram) return {name};
  return {name, name + "_bucket", name + "_sum", name + "_count"};
}

// Rounds to 15 significant digits, fewer than a double's 15.95, so that
// start * factor^i comes out as the decimal number it stands for.
double RoundToSignificantDigits(double value) {
  char buffer[64];
  const std::to_chars_result result =
      std::to_chars(buffer, buffer + sizeof(buffer), value, std::chars_format::general, 15);
  double rounded = value;
  std::from_chars(buffer, result.ptr, rounded);
  return rounded;
}

// Shared tail of ExponentialBuckets / LinearBuckets.
std::vector<double> CheckedBuckets(std::vector<double> bounds, absl::string_view what) {
  for (size_t i = 0; i < bounds.size(); ++i) {
    if (!std::isfinite(bounds[i]) || (i > 0 && !(bounds[i - 1] < bounds[i]))) {
      ReportMisuse(absl::StrCat(what, ": bounds are not finite and strictly increasing"));
      return {};
    }
  }
  return bounds;
}

}  // namespace

// ---------------------------------------------------------------------------
// Series.

void Counter::Increment(double amount) {
  if (!(amount >= 0)) return;  // also NaN
  AtomicAdd(&value_, amount);
}

void Gauge::Add(double delta) { AtomicAdd(&value_, delta); }

Histogram::Histogram(std::vector<double> upper_bounds)
    : upper_bounds_(std::move(upper_bounds)), bucket_counts_(upper_bounds_.size() + 1) {}

void Histogram::Observe(double value) {
  if (std::isnan(value)) return;
  // Bucket i holds (bound[i-1], bound[i]]: the first bound >= value.
  const size_t bucket = static_cast<size_t>(
      std::lower_bound(upper_bounds_.begin(), upper_bounds_.end(), value) - upper_bounds_.begin());
  bucket_counts_[bucket].fetch_add(1, std::memory_order_relaxed);
  AtomicAdd(&sum_, value);
}

uint64_t Histogram::Count() const {
  uint64_t count = 0;
  for (const auto& bucket : bucket_counts_) count += bucket.load(std::memory_order_relaxed);
  return count;
}

std::vector<uint64_t> Histogram::BucketCounts() const {
  std::vector<uint64_t> cumulative;
  cumulative.reserve(bucket_counts_.size());
  uint64_t running = 0;
  for (const auto& bucket : bucket_counts_) {
    running += bucket.load(std::memory_order_relaxed);
    cumulative.push_back(running);
  }
  return cumulative;
}

// ---------------------------------------------------------------------------
// Families.

const char* MetricTypeName(MetricType type) {
  switch (type) {
    case MetricType::kCounter:
      return "counter";
    case MetricType::kGauge:
      return "gauge";
    case MetricType::kHistogram:
      return "histogram";
  }
  return "untyped";
}

MetricFamily::MetricFamily(std::string name, std::string help, MetricType type,
                           std::vector<std::string> label_names)
    : name_(std::move(name)),
      help_(std::move(help)),
      type_(type),
      label_names_(std::move(label_names)) {}

bool MetricFamily::CheckLabelValues(const std::vector<std::string>& label_values) const {
  if (label_values.size() == label_names_.size()) return true;
  // Logged once per family: a wrong call site usually sits on a hot path.
  if (!misuse_reported_.exchange(true, std::memory_order_relaxed)) {
    LogError(absl::StrCat("metrics API misuse: WithLabels() on ",
                          Describe(type_, name_, label_names_), " got ", label_values.size(),
                          " label values, expected ", label_names_.size(),
                          "; its updates go to a series that is not exported"));
  }
  assert(label_values.size() == label_names_.size() && "wrong number of label values");
  return false;
}

CounterFamily::CounterFamily(std::string name, std::string help,
                             std::vector<std::string> label_names)
    : MetricFamily(std::move(name), std::move(help), MetricType::kCounter, std::move(label_names)) {
  if (this->label_names().empty()) WithLabels({});
}

Counter* CounterFamily::WithLabels(const std::vector<std::string>& label_values) {
  if (!CheckLabelValues(label_values)) return &detached_;
  return series_.Get(label_values, [] { return std::make_unique<Counter>(); });
}

void CounterFamily::AppendExposition(std::string* out) const {
  bool first = true;
  series_.ForEach([&](const std::vector<std::string>& label_values, const Counter& counter) {
    if (first) AppendHeader(*this, out);
    first = false;
    AppendSeriesName(name(), label_names(), label_values, {}, {}, out);
    AppendNumber(counter.Value(), out);
    out->push_back('\n');
  });
}

GaugeFamily::GaugeFamily(std::string name, std::string help, std::vector<std::string> label_names)
    : MetricFamily(std::move(name), std::move(help), MetricType::kGauge, std::move(label_names)) {
  if (this->label_names().empty()) WithLabels({});
}

Gauge* GaugeFamily::WithLabels(const std::vector<std::string>& label_values) {
  if (!CheckLabelValues(label_values)) return &detached_;
  return series_.Get(label_values, [] { return std::make_unique<Gauge>(); });
}

void GaugeFamily::AppendExposition(std::string* out) const {
  bool first = true;
  series_.ForEach([&](const std::vector<std::string>& label_values, const Gauge& gauge) {
    if (first) AppendHeader(*this, out);
    first = false;
    AppendSeriesName(name(), label_names(), label_values, {}, {}, out);
    AppendNumber(gauge.Value(), out);
    out->push_back('\n');
  });
}

HistogramFamily::HistogramFamily(std::string name, std::string help,
                                 std::vector<std::string> label_names,
                                 std::vector<double> upper_bounds)
    : MetricFamily(std::move(name), std::move(help), MetricType::kHistogram,
                   std::move(label_names)),
      upper_bounds_(std::move(upper_bounds)),
      detached_(upper_bounds_) {
  if (this->label_names().empty()) WithLabels({});
}

std::unique_ptr<Histogram> HistogramFamily::NewSeries() const {
  return std::unique_ptr<Histogram>(new Histogram(upper_bounds_));
}

Histogram* HistogramFamily::WithLabels(const std::vector<std::string>& label_values) {
  if (!CheckLabelValues(label_values)) return &detached_;
  return series_.Get(label_values, [this] { return NewSeries(); });
}

void HistogramFamily::AppendExposition(std::string* out) const {
  const std::string bucket_name = name() + "_bucket";
  const std::string sum_name = name() + "_sum";
  const std::string count_name = name() + "_count";
  std::vector<std::string> le_values;
  le_values.reserve(upper_bounds_.size() + 1);
  for (double bound : upper_bounds_) le_values.push_back(FormatNumber(bound));
  le_values.push_back("+Inf");

  bool first = true;
  series_.ForEach([&](const std::vector<std::string>& label_values, const Histogram& histogram) {
    if (first) AppendHeader(*this, out);
    first = false;
    // One read of the buckets serves both the +Inf bucket and _count, so that
    // the two agree even while observations go on.
    const std::vector<uint64_t> cumulative = histogram.BucketCounts();
    for (size_t i = 0; i < cumulative.size(); ++i) {
      AppendSeriesName(bucket_name, label_names(), label_values, "le", le_values[i], out);
      absl::StrAppend(out, cumulative[i], "\n");
    }
    AppendSeriesName(sum_name, label_names(), label_values, {}, {}, out);
    AppendNumber(histogram.Sum(), out);
    out->push_back('\n');
    AppendSeriesName(count_name, label_names(), label_values, {}, {}, out);
    absl::StrAppend(out, cumulative.back(), "\n");
  });
}

// ---------------------------------------------------------------------------
// Registry.

absl::StatusOr<MetricFamily*> MetricsRegistry::Register(
    MetricType type, const std::string& name, const std::string& help,
    const std::vector<std::string>& label_names, const std::vector<double>& bucket_upper_bounds) {
  OCLIP_RETURN_IF_ERROR(ValidateNames(type, name, label_names));
  std::vector<double> bounds;
  if (type == MetricType::kHistogram) {
    OCLIP_ASSIGN_OR_RETURN(bounds, NormalizeBuckets(name, bucket_upper_bounds));
  }
  const std::vector<std::string> sample_names = SampleNames(type, name);

  absl::MutexLock lock(&mu_);
  for (const std::unique_ptr<MetricFamily>& family : families_) {
    if (family->name() == name) {
      if (family->type() == type && family->label_names() == label_names &&
          (type != MetricType::kHistogram ||
           static_cast<const HistogramFamily&>(*family).bucket_upper_bounds() == bounds)) {
        return family.get();
      }
      return absl::AlreadyExistsError(absl::StrCat(
          "cannot register ", Describe(type, name, label_names), ": already registered as ",
          Describe(family->type(), family->name(), family->label_names()),
          type == family->type() ? " (or with other buckets)" : ""));
    }
  }
  for (const std::unique_ptr<MetricFamily>& family : families_) {
    for (const std::string& existing : SampleNames(family->type(), family->name())) {
      if (std::find(sample_names.begin(), sample_names.end(), existing) != sample_names.end()) {
        return absl::AlreadyExistsError(
            absl::StrCat("cannot register ", Describe(type, name, label_names),
                         ": its samples named \"", existing, "\" would clash with those of ",
                         Describe(family->type(), family->name(), family->label_names())));
      }
    }
  }

  std::unique_ptr<MetricFamily> family;
  switch (type) {
    case MetricType::kCounter:
      family.reset(new CounterFamily(name, help, label_names));
      break;
    case MetricType::kGauge:
      family.reset(new GaugeFamily(name, help, label_names));
      break;
    case MetricType::kHistogram:
      family.reset(new HistogramFamily(name, help, label_names, std::move(bounds)));
      break;
  }
  families_.push_back(std::move(family));
  return families_.back().get();
}

MetricFamily* MetricsRegistry::Detached(const absl::Status& error, MetricType type,
                                        std::string name, std::string help,
                                        std::vector<std::string> label_names,
                                        std::vector<double> bucket_upper_bounds) {
  ReportMisuse(absl::StrCat(error.message(), "; its updates go to a family that is not exported"));
  std::unique_ptr<MetricFamily> family;
  switch (type) {
    case MetricType::kCounter:
      family.reset(new CounterFamily(std::move(name), std::move(help), std::move(label_names)));
      break;
    case MetricType::kGauge:
      family.reset(new GaugeFamily(std::move(name), std::move(help), std::move(label_names)));
      break;
    case MetricType::kHistogram: {
      // Observe() needs sorted bounds; unusable ones leave just +Inf.
      absl::StatusOr<std::vector<double>> bounds =
          NormalizeBuckets(name, std::move(bucket_upper_bounds));
      family.reset(new HistogramFamily(std::move(name), std::move(help), std::move(label_names),
                                       bounds.ok() ? *std::move(bounds) : std::vector<double>{}));
      break;
    }
  }
  absl::MutexLock lock(&mu_);
  detached_.push_back(std::move(family));
  return detached_.back().get();
}

absl::StatusOr<CounterFamily*> MetricsRegistry::TryAddCounter(
    std::string name, std::string help, std::vector<std::string> label_names) {
  OCLIP_ASSIGN_OR_RETURN(MetricFamily * family,
                         Register(MetricType::kCounter, name, help, label_names, {}));
  return static_cast<CounterFamily*>(family);
}

absl::StatusOr<GaugeFamily*> MetricsRegistry::TryAddGauge(std::string name, std::string help,
                                                          std::vector<std::string> label_names) {
  OCLIP_ASSIGN_OR_RETURN(MetricFamily * family,
                         Register(MetricType::kGauge, name, help, label_names, {}));
  return static_cast<GaugeFamily*>(family);
}

absl::StatusOr<HistogramFamily*> MetricsRegistry::TryAddHistogram(
    std::string name, std::string help, std::vector<std::string> label_names,
    std::vector<double> bucket_upper_bounds) {
  OCLIP_ASSIGN_OR_RETURN(MetricFamily * family, Register(MetricType::kHistogram, name, help,
                                                         label_names, bucket_upper_bounds));
  return static_cast<HistogramFamily*>(family);
}

CounterFamily* MetricsRegistry::AddCounter(std::string name, std::string help,
                                           std::vector<std::string> label_names) {
  absl::StatusOr<MetricFamily*> family =
      Register(MetricType::kCounter, name, help, label_names, {});
  if (!family.ok()) {
    return static_cast<CounterFamily*>(Detached(family.status(), MetricType::kCounter,
                                                std::move(name), std::move(help),
                                                std::move(label_names), {}));
  }
  return static_cast<CounterFamily*>(*family);
}

GaugeFamily* MetricsRegistry::AddGauge(std::string name, std::string help,
                                       std::vector<std::string> label_names) {
  absl::StatusOr<MetricFamily*> family = Register(MetricType::kGauge, name, help, label_names, {});
  if (!family.ok()) {
    return static_cast<GaugeFamily*>(Detached(family.status(), MetricType::kGauge, std::move(name),
                                              std::move(help), std::move(label_names), {}));
  }
  return static_cast<GaugeFamily*>(*family);
}

HistogramFamily* MetricsRegistry::AddHistogram(std::string name, std::string help,
                                               std::vector<std::string> label_names,
                                               std::vector<double> bucket_upper_bounds) {
  absl::StatusOr<MetricFamily*> family =
      Register(MetricType::kHistogram, name, help, label_names, bucket_upper_bounds);
  if (!family.ok()) {
    return static_cast<HistogramFamily*>(
        Detached(family.status(), MetricType::kHistogram, std::move(name), std::move(help),
                 std::move(label_names), std::move(bucket_upper_bounds)));
  }
  return static_cast<HistogramFamily*>(*family);
}

std::string MetricsRegistry::Exposition() const {
  std::string out;
  absl::ReaderMutexLock lock(&mu_);
  for (const std::unique_ptr<MetricFamily>& family : families_) family->AppendExposition(&out);
  return out;
}

MetricsRegistry& GlobalMetrics() {
  static MetricsRegistry* const registry = new MetricsRegistry();
  return *registry;
}

std::vector<double> ExponentialBuckets(double start, double factor, int count) {
  if (!(start > 0) || !(factor > 1) || count < 1) {
    ReportMisuse(absl::StrCat("ExponentialBuckets(", FormatNumber(start), ", ",
                              FormatNumber(factor), ", ", count,
                              "): needs start > 0, factor > 1, count >= 1"));
    return {};
  }
  std::vector<double> bounds;
  bounds.reserve(static_cast<size_t>(count));
  // pow() rather than repeated multiplication: no error accumulates.
  for (int i = 0; i < count; ++i) {
    bounds.push_back(RoundToSignificantDigits(start * std::pow(factor, i)));
  }
  return CheckedBuckets(std::move(bounds), "ExponentialBuckets");
}

std::vector<double> LinearBuckets(double start, double width, int count) {
  if (!(width > 0) || count < 1) {
    ReportMisuse(absl::StrCat("LinearBuckets(", FormatNumber(start), ", ", FormatNumber(width),
                              ", ", count, "): needs width > 0, count >= 1"));
    return {};
  }
  std::vector<double> bounds;
  bounds.reserve(static_cast<size_t>(count));
  for (int i = 0; i < count; ++i) bounds.push_back(RoundToSignificantDigits(start + width * i));
  return CheckedBuckets(std::move(bounds), "LinearBuckets");
}

}  // namespace oclip
