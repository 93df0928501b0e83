#include "status.h"

namespace torchship::serve {

namespace {
ErrorStatus status(int http, GrpcCode grpc, std::string message) {
  ErrorStatus s;
  s.http = http;
  s.grpc = grpc;
  s.message = std::move(message);
  return s;
}
}  // namespace

ErrorStatus classify(std::exception_ptr error) noexcept {
  ErrorStatus s;
  try {
    try {
      std::rethrow_exception(error);
    } catch (const MethodNotAllowedError& e) {
      s = status(405, GrpcCode::unimplemented, e.what());
      s.allow = e.allow();
    } catch (const TooLargeError& e) {
      s = status(413, GrpcCode::resource_exhausted, e.what());
    } catch (const UnsupportedMediaTypeError& e) {
      s = status(415, GrpcCode::invalid_argument, e.what());
    } catch (const NotAcceptableError& e) {
      s = status(406, GrpcCode::invalid_argument, e.what());
    } catch (const InvalidInputError& e) {
      s = status(400, GrpcCode::invalid_argument, e.what());
    } catch (const ForbiddenError& e) {
      s = status(403, GrpcCode::permission_denied, e.what());
    } catch (const NotFoundError& e) {
      s = status(404, GrpcCode::not_found, e.what());
    } catch (const OverloadedError& e) {
      s = status(503, GrpcCode::unavailable, e.what());
      s.retry_after = true;
    } catch (const UnavailableError& e) {
      s = status(503, GrpcCode::unavailable, e.what());
    } catch (const TimeoutError& e) {
      s = status(503, GrpcCode::deadline_exceeded, e.what());
    } catch (const CancelledError& e) {
      s = status(499, GrpcCode::cancelled, e.what());  // nginx's "client closed request": nobody reads it
    } catch (const std::exception& e) {
      s = status(500, GrpcCode::internal, std::string("internal error: ") + e.what());
      s.internal = true;
    } catch (...) {
      s = status(500, GrpcCode::internal, "internal error (unknown exception)");
      s.internal = true;
    }
  } catch (...) {  // building the message failed (no memory): the status alone
    s.http = 500;
    s.grpc = GrpcCode::internal;
    s.internal = true;
  }
  return s;
}

}  // namespace torchship::serve
