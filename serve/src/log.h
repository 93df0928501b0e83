#pragma once
// Logging for the server, behind a narrow interface. spdlog lives only in
// log.cpp, a library built without torch's include path: torch bundles its own
// fmt (v12) headers, Debian's spdlog is built against the system fmt (v9), and
// the two must never meet in one translation unit.
#include <string_view>

namespace torchship::serve::log {

enum class Level { trace, debug, info, warn, error, critical, off };

// Asynchronous stderr logger: request threads hand a line to one writer thread
// and never wait on the terminal; under overload the oldest lines are dropped.
// `level`: trace, debug, info, warning (warn), error, critical or off.
void setup(std::string_view level);
void shutdown();  // flushes

bool enabled(Level level);
void write(Level level, std::string_view message);

inline void info(std::string_view m) { write(Level::info, m); }
inline void error(std::string_view m) { write(Level::error, m); }
inline void critical(std::string_view m) { write(Level::critical, m); }

}  // namespace torchship::serve::log
