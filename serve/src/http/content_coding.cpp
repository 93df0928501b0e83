#include "http/content_coding.h"

#include <zlib.h>

#include "http/text.h"
#include "status.h"

namespace torchship::serve::http {
namespace {

bool is_gzip(std::string_view c) { return iequals(c, "gzip") || iequals(c, "x-gzip"); }

// windowBits: 15 + 32 detects zlib or gzip; -15 is raw deflate (some clients send it as "deflate").
std::string inflate_bounded(const std::string& body, int window_bits, size_t max_bytes) {
  z_stream z{};
  if (inflateInit2(&z, window_bits) != Z_OK) throw std::runtime_error("zlib inflateInit2 failed");
  std::string out;
  char chunk[64 << 10];
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(body.data()));
  z.avail_in = static_cast<uInt>(body.size());
  int rc = Z_OK;
  while (rc != Z_STREAM_END) {
    z.next_out = reinterpret_cast<Bytef*>(chunk);
    z.avail_out = sizeof(chunk);
    rc = inflate(&z, Z_NO_FLUSH);
    if (rc != Z_OK && rc != Z_STREAM_END) {
      inflateEnd(&z);
      throw InvalidInputError(std::string("the request body is not valid compressed data (zlib: ") +
                              (z.msg ? z.msg : "truncated") + ")");
    }
    const size_t produced = sizeof(chunk) - z.avail_out;
    if (out.size() + produced > max_bytes) {
      inflateEnd(&z);
      throw TooLargeError("the decompressed request body exceeds --max-body-bytes (" + std::to_string(max_bytes) +
                          " bytes)");
    }
    out.append(chunk, produced);
    if (rc == Z_OK && produced == 0 && z.avail_in == 0) {
      inflateEnd(&z);
      throw InvalidInputError("the request body is truncated compressed data");
    }
  }
  inflateEnd(&z);
  return out;
}

}  // namespace

bool content_coding_supported(std::string_view c) {
  c = trim(c);
  return c.empty() || iequals(c, "identity") || is_gzip(c) || iequals(c, "deflate");
}

std::string decode_content(std::string_view coding, std::string body, size_t max_bytes) {
  coding = trim(coding);
  if (coding.empty() || iequals(coding, "identity")) return body;
  if (is_gzip(coding)) return inflate_bounded(body, 15 + 32, max_bytes);
  if (iequals(coding, "deflate")) {
    try {
      return inflate_bounded(body, 15 + 32, max_bytes);
    } catch (const TooLargeError&) {
      throw;
    } catch (const InvalidInputError&) {
      return inflate_bounded(body, -15, max_bytes);
    }
  }
  throw UnsupportedMediaTypeError("Content-Encoding '" + std::string(coding) +
                                  "' is not supported (supported: " + std::string(kSupportedContentCodings) + ")");
}

std::optional<std::string> choose_response_coding(std::string_view accept) {
  // Tokens with their q-values; "gzip;q=0" refuses gzip. Preference: gzip, then deflate.
  bool gzip = false, deflate = false;
  while (!accept.empty()) {
    const auto comma = accept.find(',');
    auto item = trim(accept.substr(0, comma));
    accept = comma == std::string_view::npos ? std::string_view{} : accept.substr(comma + 1);
    const auto semi = item.find(';');
    const auto name = trim(item.substr(0, semi));
    bool refused = false;
    if (semi != std::string_view::npos) {
      const auto param = trim(item.substr(semi + 1));
      refused = param.size() >= 3 && (param.substr(0, 2) == "q=" || param.substr(0, 2) == "Q=") &&
                param.find_first_not_of("0.", 2) == std::string_view::npos;
    }
    if (refused) continue;
    if (is_gzip(name)) gzip = true;
    if (iequals(name, "deflate")) deflate = true;
  }
  if (gzip) return "gzip";
  if (deflate) return "deflate";
  return std::nullopt;
}

std::string encode_content(std::string_view coding, std::string_view body) {
  z_stream z{};
  const int window_bits = is_gzip(coding) ? 15 + 16 : 15;
  if (deflateInit2(&z, Z_BEST_SPEED, Z_DEFLATED, window_bits, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
    throw std::runtime_error("zlib deflateInit2 failed");
  }
  std::string out(deflateBound(&z, static_cast<uLong>(body.size())), '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(body.data()));
  z.avail_in = static_cast<uInt>(body.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  const int rc = deflate(&z, Z_FINISH);
  out.resize(z.total_out);
  deflateEnd(&z);
  if (rc != Z_STREAM_END) throw std::runtime_error("zlib deflate failed");
  return out;
}

}  // namespace torchship::serve::http
