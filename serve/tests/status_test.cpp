// Run: ctest --test-dir build/native -R Status
#include <gtest/gtest.h>

#include "status.h"

namespace torchship::serve {
namespace {

template <typename E, typename... A>
ErrorStatus of(A&&... args) {
  return classify(std::make_exception_ptr(E(std::forward<A>(args)...)));
}

TEST(Status, EveryErrorHasOneHttpAndOneGrpcStatus) {
  EXPECT_EQ(of<InvalidInputError>("x").http, 400);
  EXPECT_EQ(of<InvalidInputError>("x").grpc, GrpcCode::invalid_argument);
  EXPECT_EQ(of<NotFoundError>("x").http, 404);
  EXPECT_EQ(of<NotFoundError>("x").grpc, GrpcCode::not_found);
  EXPECT_EQ(of<ForbiddenError>("x").http, 403);
  EXPECT_EQ(of<TooLargeError>("x").http, 413);
  EXPECT_EQ(of<TooLargeError>("x").grpc, GrpcCode::resource_exhausted);
  EXPECT_EQ(of<UnsupportedMediaTypeError>("x").http, 415);
  EXPECT_EQ(of<NotAcceptableError>("x").http, 406);
  EXPECT_EQ(of<TimeoutError>("x").grpc, GrpcCode::deadline_exceeded);
  EXPECT_EQ(of<UnavailableError>("x").http, 503);
  EXPECT_FALSE(of<UnavailableError>("x").retry_after);
  EXPECT_EQ(of<CancelledError>("x").grpc, GrpcCode::cancelled);
}

TEST(Status, OverloadAsksToRetryAndMethodNamesTheAllowedOnes) {
  const auto overloaded = of<OverloadedError>("queue full");
  EXPECT_EQ(overloaded.http, 503);
  EXPECT_EQ(overloaded.grpc, GrpcCode::unavailable);
  EXPECT_TRUE(overloaded.retry_after);
  EXPECT_EQ(overloaded.message, "queue full");
  const auto method = of<MethodNotAllowedError>("no", "POST");
  EXPECT_EQ(method.http, 405);
  EXPECT_EQ(method.allow, "POST");
}

TEST(Status, AnythingElseIsInternalAndLogged) {
  const auto s = of<std::runtime_error>("boom");
  EXPECT_EQ(s.http, 500);
  EXPECT_EQ(s.grpc, GrpcCode::internal);
  EXPECT_TRUE(s.internal);
  EXPECT_EQ(s.message, "internal error: boom");
  const auto unknown = classify(std::make_exception_ptr(42));
  EXPECT_EQ(unknown.http, 500);
  EXPECT_FALSE(of<InvalidInputError>("x").internal);
}

}  // namespace
}  // namespace torchship::serve
