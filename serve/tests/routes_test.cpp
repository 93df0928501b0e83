// Run: ctest --test-dir build/native -R Routes
#include <gtest/gtest.h>

#include "routes.h"

namespace torchship::serve {
namespace {

TEST(Routes, ServerAndHealth) {
  EXPECT_EQ(route("/v2").endpoint, Endpoint::ServerMetadata);
  EXPECT_EQ(route("/v2/health/live").endpoint, Endpoint::Live);
  EXPECT_EQ(route("/v2/health/ready").endpoint, Endpoint::Ready);
  EXPECT_EQ(route("/metrics").endpoint, Endpoint::Metrics);
  EXPECT_EQ(route("/v2/health/dead").endpoint, Endpoint::NotFound);
}

TEST(Routes, ModelEndpointsWithAndWithoutVersion) {
  for (const auto& [suffix, endpoint] : {std::pair{"", Endpoint::ModelMetadata}, {"/ready", Endpoint::ModelReady},
                                         {"/infer", Endpoint::Infer}, {"/config", Endpoint::ModelConfig},
                                         {"/stats", Endpoint::ModelStats}, {"/image", Endpoint::Image}}) {
    // Routes are views into the path: it must outlive them.
    const std::string plain_path = std::string("/v2/models/net") + suffix;
    const std::string versioned_path = std::string("/v2/models/net/versions/3") + suffix;
    const auto plain = route(plain_path);
    EXPECT_EQ(plain.endpoint, endpoint) << suffix;
    EXPECT_EQ(plain.model, "net");
    EXPECT_FALSE(plain.version);
    const auto versioned = route(versioned_path);
    EXPECT_EQ(versioned.endpoint, endpoint) << suffix;
    ASSERT_TRUE(versioned.version);
    EXPECT_EQ(*versioned.version, "3");
  }
}

TEST(Routes, RepositoryAndAllStats) {
  EXPECT_EQ(route("/v2/models/stats").endpoint, Endpoint::AllStats);
  EXPECT_EQ(route("/v2/repository/index").endpoint, Endpoint::RepositoryIndex);
  const auto load = route("/v2/repository/models/net/load");
  EXPECT_EQ(load.endpoint, Endpoint::RepositoryControl);
  EXPECT_EQ(load.model, "net");
  EXPECT_EQ(route("/v2/repository/models/net/delete").endpoint, Endpoint::NotFound);
}

TEST(Routes, RefusesWhatIsNotARoute) {
  for (const char* path : {"", "v2", "/", "/v3", "/v2/models", "/v2/models/", "/v2/models/net/infer/x",
                           "/v2/models/net/versions", "/v2/models/net/versions/1/x", "/a/b/c/d/e/f/g/h/i",
                           "/v2/models/net/predict"}) {
    EXPECT_EQ(route(path).endpoint, Endpoint::NotFound) << path;
  }
}

TEST(Routes, MethodsPerEndpoint) {
  EXPECT_TRUE(method_matches(Endpoint::Infer, "POST"));
  EXPECT_FALSE(method_matches(Endpoint::Infer, "GET"));
  EXPECT_TRUE(method_matches(Endpoint::Live, "HEAD"));
  EXPECT_FALSE(method_matches(Endpoint::Live, "POST"));
  EXPECT_TRUE(method_matches(Endpoint::RepositoryIndex, "POST"));
  EXPECT_EQ(allowed_methods(Endpoint::ModelConfig), "GET, HEAD");
  EXPECT_FALSE(method_matches(Endpoint::Infer, "PUT"));
  for (const auto e : {Endpoint::Image, Endpoint::SoleModelImage}) {  // the book's curl -T sends PUT
    EXPECT_TRUE(method_matches(e, "PUT"));
    EXPECT_TRUE(method_matches(e, "POST"));
    EXPECT_FALSE(method_matches(e, "GET"));
    EXPECT_EQ(allowed_methods(e), "POST, PUT");
  }
}

TEST(Routes, TheBooksImageFormNamesNoModel) {
  const auto r = route("/image");
  EXPECT_EQ(r.endpoint, Endpoint::SoleModelImage);
  EXPECT_TRUE(r.model.empty());
  EXPECT_EQ(route("/image/x").endpoint, Endpoint::NotFound);
}

}  // namespace
}  // namespace torchship::serve
