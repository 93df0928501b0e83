#pragma once
// The one table from errors to protocol statuses, for both front ends: every error a request
// can meet becomes an HTTP status and a gRPC status code here, and nowhere else.
#include <exception>
#include <string>

#include "torchship/errors.h"

namespace torchship::serve {

// Errors of the request's form rather than its content (HTTP 405, 413, 415).
class MethodNotAllowedError : public InvalidInputError {
 public:
  MethodNotAllowedError(const std::string& message, std::string allow)
      : InvalidInputError(message), allow_(std::move(allow)) {}
  const std::string& allow() const { return allow_; }

 private:
  std::string allow_;
};
class UnsupportedMediaTypeError : public InvalidInputError {
 public:
  using InvalidInputError::InvalidInputError;
};

// The answer cannot take any form the request's Accept header lists (HTTP 406).
class NotAcceptableError : public InvalidInputError {
 public:
  using InvalidInputError::InvalidInputError;
};

// Refused by policy (HTTP 403), e.g. loading models over the network.
class ForbiddenError : public Error {
 public:
  using Error::Error;
};

// gRPC status codes (grpc/status.h's values, without including gRPC here).
enum class GrpcCode : int {
  ok = 0, cancelled = 1, unknown = 2, invalid_argument = 3, deadline_exceeded = 4, not_found = 5,
  permission_denied = 7, resource_exhausted = 8, unimplemented = 12, internal = 13, unavailable = 14,
};

struct ErrorStatus {
  int http = 500;
  GrpcCode grpc = GrpcCode::internal;
  std::string message;
  bool retry_after = false;  // overloaded: ask the client to come back (HTTP Retry-After)
  std::string allow;         // 405: the methods the route takes
  bool internal = false;     // a fault of ours, worth an error line in the log
};

// Never throws; an unknown exception is an internal error.
ErrorStatus classify(std::exception_ptr error) noexcept;

inline constexpr int kRetryAfterSeconds = 1;

}  // namespace torchship::serve
