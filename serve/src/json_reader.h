#pragma once
// A strict JSON (RFC 8259) reader that drives a SAX handler, for request bodies
// that are mostly numbers. nlohmann's lexer copies every number character by
// character into a token buffer and converts it with strtod; an image tensor
// as JSON is 150,528 numbers, and that took ~35 ms of a ResNet-18 request.
// Here a number is validated in place against the JSON grammar and converted
// with std::from_chars (locale-free, correctly rounded), and string runs are
// appended in one piece.
//
// The handler's methods are nlohmann's SAX names; each returns false to stop:
//   null(), boolean(bool), number_integer(int64_t) (negative integers),
//   number_unsigned(uint64_t) (non-negative integers), number_float(double)
//   (fractions, exponents, integers beyond 64 bits), string(std::string&),
//   key(std::string&), start_object(), end_object(), start_array(), end_array().
// Accepts exactly what nlohmann accepts (a leading UTF-8 BOM included), checked
// against it event by event in serve/tests/json_reader_test.cpp.
#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

namespace torchship::serve::json {

template <typename Handler>
class Reader {
 public:
  // `max_depth` guards the reader's own recursion, whatever the handler allows.
  Reader(std::string_view text, Handler& handler, int max_depth = 512)
      : begin_(text.data()), p_(text.data()), end_(text.data() + text.size()), h_(handler), max_depth_(max_depth) {}

  // True when the whole text is one JSON value and the handler accepted every
  // event. False: error() is set for a syntax error, empty when the handler stopped.
  bool parse() {
    if (end_ - p_ >= 3 && std::memcmp(p_, "\xEF\xBB\xBF", 3) == 0) p_ += 3;
    skip_whitespace();
    if (!value(0)) return false;
    skip_whitespace();
    if (p_ != end_) return fail("unexpected " + describe_here() + " after the JSON value");
    return true;
  }

  const std::string& error() const { return error_; }

 private:
  bool fail(const std::string& what) {
    error_ = what + " at byte " + std::to_string(p_ - begin_);
    return false;
  }

  std::string describe_here() const {
    if (p_ == end_) return "end of input";
    const auto c = static_cast<unsigned char>(*p_);
    if (c >= 0x20 && c < 0x7f) return std::string("'") + static_cast<char>(c) + "'";
    static constexpr char kHex[] = "0123456789ABCDEF";
    return std::string("byte 0x") + kHex[c >> 4] + kHex[c & 0xf];
  }

  void skip_whitespace() {
    while (p_ != end_ && (*p_ == ' ' || *p_ == '\n' || *p_ == '\r' || *p_ == '\t')) ++p_;
  }

  static bool is_digit(char c) { return c >= '0' && c <= '9'; }

  bool value(int depth) {
    if (p_ == end_) return fail("unexpected end of input, expected a value");
    switch (*p_) {
      case '{':
        return object(depth + 1);
      case '[':
        return array(depth + 1);
      case '"': {
        std::string s;
        return string(s) && h_.string(s);
      }
      case 't':
        return literal("true") && h_.boolean(true);
      case 'f':
        return literal("false") && h_.boolean(false);
      case 'n':
        return literal("null") && h_.null();
      default:
        if (*p_ == '-' || is_digit(*p_)) return number();
        return fail("unexpected " + describe_here() + ", expected a value");
    }
  }

  bool literal(std::string_view word) {
    if (static_cast<size_t>(end_ - p_) < word.size() || std::memcmp(p_, word.data(), word.size()) != 0) {
      return fail("invalid literal, expected '" + std::string(word) + "'");
    }
    p_ += word.size();
    return true;
  }

  bool object(int depth) {
    if (depth > max_depth_) return fail("JSON nested deeper than " + std::to_string(max_depth_) + " levels");
    ++p_;
    const auto member = [&] {
      if (p_ == end_ || *p_ != '"') return fail("unexpected " + describe_here() + ", expected a string key");
      key_.clear();
      if (!string(key_) || !h_.key(key_)) return false;
      skip_whitespace();
      if (p_ == end_ || *p_ != ':') return fail("unexpected " + describe_here() + ", expected ':' after a key");
      ++p_;
      skip_whitespace();
      return value(depth);
    };
    return h_.start_object() && elements('}', "an object", member) && h_.end_object();
  }

  bool array(int depth) {
    if (depth > max_depth_) return fail("JSON nested deeper than " + std::to_string(max_depth_) + " levels");
    ++p_;
    return h_.start_array() && elements(']', "an array", [&] { return value(depth); }) && h_.end_array();
  }

  // What follows '{' or '[': elements separated by ',' up to `close` (consumed).
  template <typename Element>
  bool elements(char close, const char* what, const Element& element) {
    skip_whitespace();
    if (p_ != end_ && *p_ == close) {
      ++p_;
      return true;
    }
    while (true) {
      skip_whitespace();
      if (!element()) return false;
      skip_whitespace();
      if (p_ != end_ && *p_ == ',') {
        ++p_;
        continue;
      }
      if (p_ != end_ && *p_ == close) {
        ++p_;
        return true;
      }
      return fail("unexpected " + describe_here() + ", expected ',' or '" + close + "' in " + what);
    }
  }

  // -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
  bool number() {
    const char* start = p_;
    if (*p_ == '-') ++p_;
    if (p_ != end_ && *p_ == '0') {
      ++p_;
    } else if (p_ != end_ && is_digit(*p_)) {
      while (p_ != end_ && is_digit(*p_)) ++p_;
    } else {
      return fail("invalid number: expected a digit");
    }
    bool integer = true;
    if (p_ != end_ && *p_ == '.') {
      integer = false;
      ++p_;
      if (p_ == end_ || !is_digit(*p_)) return fail("invalid number: expected a digit after '.'");
      while (p_ != end_ && is_digit(*p_)) ++p_;
    }
    if (p_ != end_ && (*p_ == 'e' || *p_ == 'E')) {
      integer = false;
      ++p_;
      if (p_ != end_ && (*p_ == '+' || *p_ == '-')) ++p_;
      if (p_ == end_ || !is_digit(*p_)) return fail("invalid number: expected a digit in the exponent");
      while (p_ != end_ && is_digit(*p_)) ++p_;
    }
    if (integer) {
      if (*start == '-') {
        int64_t v = 0;
        if (std::from_chars(start, p_, v).ec == std::errc()) return h_.number_integer(v);
      } else {
        uint64_t v = 0;
        if (std::from_chars(start, p_, v).ec == std::errc()) return h_.number_unsigned(v);
      }
      // Beyond 64 bits: a double, as nlohmann does.
    }
    double d = 0;
    const auto r = std::from_chars(start, p_, d);
    if (r.ec == std::errc::result_out_of_range) {
      // Underflow rounds to zero (as strtod does); overflow is refused below.
      d = std::strtod(std::string(start, p_).c_str(), nullptr);
    }
    if (!std::isfinite(d)) {
      const std::string text(start, std::min<size_t>(40, static_cast<size_t>(p_ - start)));
      p_ = start;
      return fail("number overflow: " + text + " is beyond the range of a double");
    }
    return h_.number_float(d);
  }

  static int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  }

  // Reads the XXXX of \uXXXX at p_; -1 if they are not four hex digits.
  long read_hex4() {
    if (end_ - p_ < 4) return -1;
    long v = 0;
    for (int i = 0; i < 4; ++i) {
      const int h = hex_value(p_[i]);
      if (h < 0) return -1;
      v = v * 16 + h;
    }
    p_ += 4;
    return v;
  }

  static void append_utf8(std::string& out, long cp) {
    if (cp < 0x80) {
      out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      out += static_cast<char>(0xC0 | (cp >> 6));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      out += static_cast<char>(0xE0 | (cp >> 12));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | (cp >> 18));
      out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }

  // Length of the well-formed UTF-8 sequence (2-4 bytes) at p_, 0 if ill-formed
  // (overlong, a surrogate, beyond U+10FFFF, or cut short).
  size_t utf8_length() const {
    const auto b0 = static_cast<unsigned char>(p_[0]);
    const auto at = [&](std::ptrdiff_t i) { return p_ + i < end_ ? static_cast<unsigned char>(p_[i]) : 0u; };
    const auto cont = [](unsigned b) { return (b & 0xC0) == 0x80; };
    if (b0 >= 0xC2 && b0 <= 0xDF) return cont(at(1)) ? 2 : 0;
    if (b0 >= 0xE0 && b0 <= 0xEF) {
      const unsigned b1 = at(1);
      const unsigned lo = b0 == 0xE0 ? 0xA0 : 0x80;
      const unsigned hi = b0 == 0xED ? 0x9F : 0xBF;
      return b1 >= lo && b1 <= hi && cont(at(2)) ? 3 : 0;
    }
    if (b0 >= 0xF0 && b0 <= 0xF4) {
      const unsigned b1 = at(1);
      const unsigned lo = b0 == 0xF0 ? 0x90 : 0x80;
      const unsigned hi = b0 == 0xF4 ? 0x8F : 0xBF;
      return b1 >= lo && b1 <= hi && cont(at(2)) && cont(at(3)) ? 4 : 0;
    }
    return 0;
  }

  bool string(std::string& out) {
    ++p_;  // the opening quote
    while (true) {
      const char* run = p_;
      while (p_ != end_) {
        const auto c = static_cast<unsigned char>(*p_);
        if (c == '"' || c == '\\' || c < 0x20 || c >= 0x80) break;
        ++p_;
      }
      out.append(run, p_);
      if (p_ == end_) return fail("unterminated string");
      const auto c = static_cast<unsigned char>(*p_);
      if (c == '"') {
        ++p_;
        return true;
      }
      if (c < 0x20) return fail("control character " + describe_here() + " in a string (escape it)");
      if (c >= 0x80) {
        const size_t n = utf8_length();
        if (n == 0) return fail("ill-formed UTF-8 " + describe_here() + " in a string");
        out.append(p_, n);
        p_ += n;
        continue;
      }
      ++p_;  // the backslash
      if (p_ == end_) return fail("unterminated string");
      switch (*p_++) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          long cp = read_hex4();
          if (cp < 0) return fail("invalid \\u escape: expected four hex digits");
          if (cp >= 0xDC00 && cp <= 0xDFFF) return fail("invalid \\u escape: a low surrogate without a high one");
          if (cp >= 0xD800 && cp <= 0xDBFF) {
            if (end_ - p_ < 2 || p_[0] != '\\' || p_[1] != 'u') {
              return fail("invalid \\u escape: a high surrogate must be followed by a low one");
            }
            p_ += 2;
            const long low = read_hex4();
            if (low < 0xDC00 || low > 0xDFFF) {
              return fail("invalid \\u escape: a high surrogate must be followed by a low one");
            }
            cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
          }
          append_utf8(out, cp);
          break;
        }
        default:
          --p_;
          return fail("invalid escape " + describe_here() + " in a string");
      }
    }
  }

  const char* const begin_;
  const char* p_;
  const char* const end_;
  Handler& h_;
  const int max_depth_;
  std::string key_;  // reused for every key
  std::string error_;
};

}  // namespace torchship::serve::json
