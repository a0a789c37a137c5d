#include "core/logging.h"

#include <atomic>
#include <chrono>
#include <ctime>
#include <cstdio>
#include <mutex>
#include <string>

#ifdef OCLIP_HAVE_SPDLOG
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#endif

namespace oclip {
namespace {

std::atomic<LogLevel> g_min_level{LogLevel::kInfo};
std::atomic<LogFormat> g_format{LogFormat::kText};

constexpr const char* kJsonLevels[] = {"debug", "info", "warning", "error"};

// One JSON line; the time is UTC with milliseconds, as the text format.
std::string JsonLine(LogLevel level, std::string_view message) {
  const auto now = std::chrono::system_clock::now();
  const std::time_t seconds = std::chrono::system_clock::to_time_t(now);
  const int millis = static_cast<int>(
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() %
      1000);
  std::tm utc;
  gmtime_r(&seconds, &utc);
  char time[64];
  std::snprintf(time, sizeof(time), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", utc.tm_year + 1900,
                utc.tm_mon + 1, utc.tm_mday, utc.tm_hour, utc.tm_min, utc.tm_sec, millis);
  return std::string("{\"time\":\"") + time + "\",\"level\":\"" +
         kJsonLevels[static_cast<int>(level)] + "\",\"msg\":" + JsonQuote(message) + "}";
}

#ifdef OCLIP_HAVE_SPDLOG
spdlog::logger& Logger() {
  // Logs go to stderr so that stdout stays clean for command output (JSON).
  static auto* logger = [] {
    auto sink = std::make_shared<spdlog::sinks::stderr_color_sink_mt>();
    auto* l = new spdlog::logger("oclip", std::move(sink));
    l->set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%L%$ %v");
    l->set_level(spdlog::level::trace);
    return l;
  }();
  return *logger;
}
#endif

}  // namespace

void SetLogLevel(LogLevel level) { g_min_level.store(level); }

void SetLogFormat(LogFormat format) { g_format.store(format); }

std::string JsonQuote(std::string_view message) {
  std::string out = "\"";
  for (const char c : message) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char escaped[8];
          std::snprintf(escaped, sizeof(escaped), "\\u%04x", c);
          out += escaped;
        } else {
          out += c;
        }
    }
  }
  return out + "\"";
}

void Log(LogLevel level, std::string_view message) {
  if (level < g_min_level.load()) return;
  if (g_format.load() == LogFormat::kJson) {
    static std::mutex mu;
    const std::string line = JsonLine(level, message);
    std::lock_guard<std::mutex> lock(mu);
    std::fprintf(stderr, "%s\n", line.c_str());
    return;
  }
#ifdef OCLIP_HAVE_SPDLOG
  spdlog::level::level_enum spd = spdlog::level::info;
  switch (level) {
    case LogLevel::kDebug: spd = spdlog::level::debug; break;
    case LogLevel::kInfo: spd = spdlog::level::info; break;
    case LogLevel::kWarning: spd = spdlog::level::warn; break;
    case LogLevel::kError: spd = spdlog::level::err; break;
  }
  Logger().log(spd, "{}", message);
#else
  static std::mutex mu;
  static const char kLetters[] = {'D', 'I', 'W', 'E'};
  std::lock_guard<std::mutex> lock(mu);
  std::fprintf(stderr, "%c %.*s\n", kLetters[static_cast<int>(level)],
               static_cast<int>(message.size()), message.data());
#endif
}

}  // namespace oclip
