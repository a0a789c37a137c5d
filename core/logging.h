// Process-wide logging: the logger is one of the two permitted globals (the
// other is the metrics registry). Backed by spdlog when it is available and by
// plain stderr otherwise, so the model library builds against a bare LibTorch.
//
// Thread-safe. Messages are single lines; callers format them with
// absl::StrCat / absl::StrFormat.

#ifndef OCLIP_CORE_LOGGING_H_
#define OCLIP_CORE_LOGGING_H_

#include <string>
#include <string_view>

namespace oclip {

enum class LogLevel { kDebug, kInfo, kWarning, kError };

// Messages below `level` are dropped. Default: kInfo.
void SetLogLevel(LogLevel level);

// kText: "2026-01-02T03:04:05.678 I message". kJson: one JSON object per line,
// {"time":"2026-01-02T03:04:05.678Z","level":"info","msg":"..."}, for log
// collectors (Loki, Cloud Logging, ...). Default: kText.
enum class LogFormat { kText, kJson };
void SetLogFormat(LogFormat format);

// `message` as a JSON string literal, quotes included.
std::string JsonQuote(std::string_view message);

void Log(LogLevel level, std::string_view message);

inline void LogInfo(std::string_view message) { Log(LogLevel::kInfo, message); }
inline void LogWarning(std::string_view message) {
  Log(LogLevel::kWarning, message);
}
inline void LogError(std::string_view message) { Log(LogLevel::kError, message); }

}  // namespace oclip

#endif  // OCLIP_CORE_LOGGING_H_
