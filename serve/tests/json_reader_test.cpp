// json::Reader against nlohmann's SAX parser as the oracle: the same documents
// must give the same events (values exact) or both be refused. Hand-picked
// edge cases, then thousands of generated documents and byte-level mutations.
#include "json_reader.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cstring>
#include <random>
#include <sstream>
#include <string>
#include <vector>

namespace {

using torchship::serve::json::Reader;

// Writes every event as text; doubles as their bit patterns, so equality is exact.
struct Recorder {
  std::vector<std::string> events;
  bool add(std::string e) {
    events.push_back(std::move(e));
    return true;
  }
  static std::string bits(double d) {
    uint64_t u = 0;
    std::memcpy(&u, &d, sizeof u);
    return std::to_string(u);
  }
  bool null() { return add("null"); }
  bool boolean(bool v) { return add(v ? "true" : "false"); }
  bool number_integer(int64_t v) { return add("int " + std::to_string(v)); }
  bool number_unsigned(uint64_t v) { return add("uint " + std::to_string(v)); }
  bool number_float(double v) { return add("float " + bits(v)); }
  bool number_float(double v, const std::string&) { return number_float(v); }
  bool string(std::string& s) { return add("string " + s); }
  bool binary(nlohmann::json::binary_t&) { return add("binary"); }
  bool key(std::string& s) { return add("key " + s); }
  bool start_object() { return add("{"); }
  bool start_object(std::size_t) { return start_object(); }
  bool end_object() { return add("}"); }
  bool start_array() { return add("["); }
  bool start_array(std::size_t) { return start_array(); }
  bool end_array() { return add("]"); }
  bool parse_error(std::size_t, const std::string&, const nlohmann::json::exception&) { return false; }
};

struct Outcome {
  bool ok = false;
  std::vector<std::string> events;
};

Outcome with_reader(const std::string& text) {
  Recorder r;
  Reader reader(text, r);
  const bool ok = reader.parse();
  if (!ok) {
    EXPECT_FALSE(reader.error().empty()) << "a refusal must say why: " << text;
  }
  return {ok, r.events};
}

Outcome with_nlohmann(const std::string& text) {
  Recorder r;
  const bool ok = nlohmann::json::sax_parse(text.data(), text.data() + text.size(), &r);
  return {ok, r.events};
}

void expect_same(const std::string& text) {
  // nlohmann's pointer input stops at a NUL byte; JSON never holds one raw, and the reader refuses it.
  if (text.find('\0') != std::string::npos) {
    EXPECT_FALSE(with_reader(text).ok) << "raw NUL accepted";
    return;
  }
  const auto ours = with_reader(text);
  const auto oracle = with_nlohmann(text);
  ASSERT_EQ(ours.ok, oracle.ok) << "accept/refuse differs for: " << text;
  if (ours.ok) {
    ASSERT_EQ(ours.events, oracle.events) << "events differ for: " << text;
  }
}

TEST(JsonReader, AgreesWithNlohmannOnEdgeCases) {
  const std::vector<std::string> cases = {
      "{}", "[]", " [ ] ", "0", "-0", "1", "-1", "1.5", "-1.5e3", "1E+2", "1e-2", "0.0", "1e0",
      "9223372036854775807", "9223372036854775808", "18446744073709551615", "18446744073709551616",
      "-9223372036854775808", "-9223372036854775809", "123456789012345678901234567890",
      "1e308", "1.7976931348623157e308", "1e309", "-1e309", "1e-400", "4.9e-324", "2.2250738585072014e-308",
      "0.1", "0.30000000000000004", "3.141592653589793238462643383279",
      "01", "-", "-a", "1.", ".5", "+1", "1e", "1e+", "0x10", "NaN", "Infinity", "-Infinity", "1.0.0", "--1",
      "true", "false", "null", "tru", "nul", "True", "nulll",
      R"("")", R"("a")", R"("\"\\\/\b\f\n\r\t")", R"("\u0041\u00e9\u20AC")", R"("\ud83d\ude00")", R"("\uD83D")",
      R"("\uDE00")", R"("\ud83dx")", R"("\u12")", R"("\x")", "\"a\tb\"", "\"a\nb\"", "\"unterminated",
      "\"\xC3\xA9\"", "\"\xE2\x82\xAC\"", "\"\xF0\x9F\x98\x80\"", "\"\xC0\x80\"", "\"\xED\xA0\x80\"", "\"\xF4\x90\x80\x80\"",
      "\"\xFF\"", "\"\xC3\"", "\"\x80\"", "\xEF\xBB\xBF{}", "\xEF\xBB{}",
      R"({"a":1,"b":[1,2,{"c":null}],"d":{"e":"f"}})", R"({"a" 1})", R"({"a":1,})", R"([1,])", R"([,1])",
      R"({1:2})", R"({"a":1 "b":2})", "[1 2]", "{} {}", "[] x", "[", "{", "]", "}", "", "   ",
      "[[[[[]]]]]", R"({"inputs":[{"name":"x","shape":[2],"datatype":"FP32","data":[1.5,-2e-3]}]})",
  };
  for (const auto& text : cases) expect_same(text);
}

std::string random_document(std::mt19937_64& rng, int depth) {
  std::uniform_int_distribution<int> kind(0, depth > 4 ? 5 : 7);
  std::ostringstream out;
  switch (kind(rng)) {
    case 0: out << (rng() % 2 ? "true" : "false"); break;
    case 1: out << "null"; break;
    case 2: out << static_cast<int64_t>(rng()) / static_cast<int64_t>(1 + rng() % 1000000); break;
    case 3: {
      std::uniform_real_distribution<double> mag(-320, 308);
      const double v = (rng() % 2 ? -1 : 1) * std::pow(10.0, mag(rng)) * std::uniform_real_distribution<double>(1, 10)(rng);
      out << nlohmann::json(v).dump();
      break;
    }
    case 4: out << nlohmann::json(static_cast<float>(std::normal_distribution<double>(0, 1)(rng))).dump(); break;
    case 5: {
      std::string s;
      for (int i = 0, n = static_cast<int>(rng() % 8); i < n; ++i) s += static_cast<char>(rng() % 2 ? 'a' + rng() % 26 : rng() % 128);
      out << nlohmann::json(s).dump(-1, ' ', rng() % 2 == 0);
      break;
    }
    case 6: {
      out << "[";
      for (int i = 0, n = static_cast<int>(rng() % 5); i < n; ++i) out << (i ? "," : "") << random_document(rng, depth + 1);
      out << "]";
      break;
    }
    default: {
      out << "{";
      for (int i = 0, n = static_cast<int>(rng() % 5); i < n; ++i) {
        out << (i ? ", " : "") << "\"k" << rng() % 100 << "\": " << random_document(rng, depth + 1);
      }
      out << "}";
    }
  }
  return out.str();
}

TEST(JsonReader, AgreesWithNlohmannOnGeneratedAndMutatedDocuments) {
  std::mt19937_64 rng(20261123);
  static constexpr char kInteresting[] = "{}[],:\"\\-+.eE0123456789 tfnu\x80\xC3\xFF";
  for (int i = 0; i < 4000; ++i) {
    std::string doc = random_document(rng, 0);
    expect_same(doc);
    for (int m = 0; m < 3 && !doc.empty(); ++m) {
      std::string mutated = doc;
      const size_t at = rng() % mutated.size();
      switch (rng() % 3) {
        case 0: mutated[at] = kInteresting[rng() % (sizeof kInteresting - 1)]; break;
        case 1: mutated.erase(at, 1); break;
        default: mutated.insert(at, 1, kInteresting[rng() % (sizeof kInteresting - 1)]);
      }
      expect_same(mutated);
    }
    if (HasFatalFailure()) return;
  }
}

TEST(JsonReader, NamesTheProblemAndWhere) {
  Recorder r;
  const std::string text = R"({"a": [1, 2,, 3]})";
  Reader reader(text, r);
  ASSERT_FALSE(reader.parse());
  EXPECT_EQ(reader.error(), "unexpected ',', expected a value at byte 12");
}

TEST(JsonReader, BoundsItsOwnDepth) {
  Recorder r;
  const std::string deep(100000, '[');
  Reader reader(deep, r, 64);
  ASSERT_FALSE(reader.parse());
  EXPECT_NE(reader.error().find("nested deeper than 64"), std::string::npos) << reader.error();
}

TEST(JsonReader, StopsWhenTheHandlerSaysSo) {
  struct StopAtSecondNumber : Recorder {
    int numbers = 0;
    bool number_unsigned(uint64_t) { return ++numbers < 2; }
  } h;
  const std::string text = "[1, 2, 3]";
  Reader reader(text, h);
  EXPECT_FALSE(reader.parse());
  EXPECT_TRUE(reader.error().empty());  // the handler stopped it, not a syntax error
  EXPECT_EQ(h.numbers, 2);
}

}  // namespace
