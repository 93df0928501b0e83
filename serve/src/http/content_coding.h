#pragma once
// HTTP content codings (RFC 9110 8.4) with zlib: request bodies sent gzip- or deflate-encoded
// are decoded, bounded so a small compressed body cannot expand past the body limit; answers
// are encoded when the client accepts it.
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace torchship::serve::http {

inline constexpr std::string_view kSupportedContentCodings = "gzip, deflate, identity";

// A Content-Encoding value this server can decode ("", identity, gzip, x-gzip, deflate).
bool content_coding_supported(std::string_view content_encoding);

// Decodes `body` per `content_encoding`. Throws InvalidInputError for corrupt data and
// BodyTooLargeError when the result would exceed `max_bytes`.
std::string decode_content(std::string_view content_encoding, std::string body, size_t max_bytes);

// The coding to answer with for this Accept-Encoding ("gzip", "deflate"), if any is accepted.
std::optional<std::string> choose_response_coding(std::string_view accept_encoding);

// Encodes with "gzip" or "deflate".
std::string encode_content(std::string_view coding, std::string_view body);

}  // namespace torchship::serve::http
