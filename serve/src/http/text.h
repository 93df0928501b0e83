#pragma once
// Small text helpers shared by the transport and the HTTP routes (torch-free).
#include <nlohmann/json.hpp>
#include <strings.h>

#include <charconv>
#include <cstdint>
#include <optional>

#include <string>
#include <string_view>

namespace torchship::serve::http {

// ASCII case-insensitive equality (header names, codings, schemes).
inline bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && strncasecmp(a.data(), b.data(), a.size()) == 0;
}

// Without leading and trailing spaces and tabs (RFC 9110 OWS).
inline std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// A header's decimal value (digits only: no sign, no spaces); nullopt when malformed or too large.
inline std::optional<uint64_t> parse_decimal(std::string_view value) {
  uint64_t n = 0;
  const auto* end = value.data() + value.size();
  const auto result = std::from_chars(value.data(), end, n);
  if (value.empty() || result.ec != std::errc() || result.ptr != end) return std::nullopt;
  return n;
}

// The protocol's error body, {"error": "..."}; invalid UTF-8 (a decoded path can hold any byte) is replaced.
inline std::string error_json(std::string_view message) {
  return nlohmann::json{{"error", message}}.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace torchship::serve::http
