// Run: ctest --test-dir build/native -R ContentCoding
#include <gtest/gtest.h>

#include "http/content_coding.h"
#include "status.h"

namespace torchship::serve::http {
namespace {

TEST(ContentCoding, RoundTripsGzipAndDeflate) {
  const std::string body(100000, 'a');
  for (const char* coding : {"gzip", "deflate"}) {
    const auto encoded = encode_content(coding, body);
    EXPECT_LT(encoded.size(), body.size() / 10) << coding;
    EXPECT_EQ(decode_content(coding, encoded, body.size()), body) << coding;
  }
  EXPECT_EQ(decode_content("identity", "xyz", 3), "xyz");
  EXPECT_EQ(decode_content("", "xyz", 3), "xyz");
}

TEST(ContentCoding, ABombStopsAtTheLimitAndGarbageIsABadRequest) {
  const auto bomb = encode_content("gzip", std::string(10 << 20, '\0'));  // ~10 KB that inflates to 10 MB
  EXPECT_THROW(decode_content("gzip", bomb, 1 << 20), TooLargeError);
  EXPECT_THROW(decode_content("gzip", "not gzip at all", 1 << 20), InvalidInputError);
  const auto whole = encode_content("gzip", std::string(5000, 'x'));
  EXPECT_THROW(decode_content("gzip", whole.substr(0, whole.size() / 2), 1 << 20), InvalidInputError);
  EXPECT_THROW(decode_content("br", "x", 10), UnsupportedMediaTypeError);
}

TEST(ContentCoding, SupportedCodingsAndAcceptEncoding) {
  EXPECT_TRUE(content_coding_supported("gzip"));
  EXPECT_TRUE(content_coding_supported(" Deflate "));
  EXPECT_TRUE(content_coding_supported("identity"));
  EXPECT_FALSE(content_coding_supported("br"));
  EXPECT_FALSE(content_coding_supported("gzip, br"));
  EXPECT_EQ(choose_response_coding("gzip, deflate, br"), "gzip");
  EXPECT_EQ(choose_response_coding("br;q=1, deflate"), "deflate");
  EXPECT_EQ(choose_response_coding("gzip;q=0, deflate;q=0.5"), "deflate");
  EXPECT_EQ(choose_response_coding("identity"), std::nullopt);
  EXPECT_EQ(choose_response_coding(""), std::nullopt);
}

}  // namespace
}  // namespace torchship::serve::http
