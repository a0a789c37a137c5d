#include "core/logging.h"

#include <atomic>
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

void Log(LogLevel level, std::string_view message) {
  if (level < g_min_level.load()) return;
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
