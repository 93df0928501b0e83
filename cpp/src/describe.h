#pragma once
// Internal: an exception's message without c10's C++ backtrace, for messages
// that reach users.
#include <c10/util/Exception.h>

#include <exception>
#include <string>

namespace torchship::detail {

inline std::string describe(const std::exception& e) {
  if (const auto* c10_error = dynamic_cast<const c10::Error*>(&e)) return c10_error->what_without_backtrace();
  return e.what();
}

}  // namespace torchship::detail
