#pragma once
// Typed errors that cross the core's boundary. The server maps them once to
// HTTP status codes, the bindings once to Python exception types.
#include <stdexcept>
#include <string>

namespace torchship {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The caller sent something the model cannot take (HTTP 400, Python ValueError).
class InvalidInputError : public Error {
 public:
  using Error::Error;
};

// The request, or something in it (a body, an image), is larger than a limit allows (HTTP 413).
class TooLargeError : public InvalidInputError {
 public:
  using InvalidInputError::InvalidInputError;
};

// Unknown model or version (HTTP 404, Python LookupError).
class NotFoundError : public Error {
 public:
  using Error::Error;
};

// The request queue is full: retry later (HTTP 503 + Retry-After).
class OverloadedError : public Error {
 public:
  using Error::Error;
};

// Not ready yet, or shutting down (HTTP 503).
class UnavailableError : public Error {
 public:
  using Error::Error;
};

// The request waited in the queue longer than its timeout (HTTP 503).
class TimeoutError : public Error {
 public:
  using Error::Error;
};

// The caller withdrew the request (its client disconnected) before it ran; nobody reads this.
class CancelledError : public Error {
 public:
  using Error::Error;
};

// An artifact or config could not be loaded; the message names model, version, file, cause.
class LoadError : public Error {
 public:
  using Error::Error;
};

}  // namespace torchship
