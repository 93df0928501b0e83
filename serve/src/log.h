#pragma once
// Logging for the server, behind a narrow interface. spdlog lives only in
// log.cpp, a library built without torch's include path: torch bundles its own
// fmt (v12) headers, Debian's spdlog is built against the system fmt (v9), and
// the two must never meet in one translation unit.
#include <string_view>

namespace torchship::serve::log {

enum class Level { trace, debug, info, warn, error, critical, off };

// stderr logger, synchronous into stdio's buffer (flushed every second, at once
// for warnings and errors): no thread wake-up per access line.
// `level`: trace, debug, info, warning (warn), error, critical or off.
void setup(std::string_view level);
void shutdown();  // flushes

bool enabled(Level level);
void write(Level level, std::string_view message);

inline void info(std::string_view m) { write(Level::info, m); }
inline void warn(std::string_view m) { write(Level::warn, m); }
inline void error(std::string_view m) { write(Level::error, m); }
inline void critical(std::string_view m) { write(Level::critical, m); }

}  // namespace torchship::serve::log
