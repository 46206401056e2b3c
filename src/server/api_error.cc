#include "server/api_error.h"

#include "core/printable.h"
#include "server/json_out.h"

namespace dsa::server {

ApiError::ApiError(int status, std::string message, std::string param, std::string code)
    : std::runtime_error(std::move(message)),
      status_(status),
      param_(std::move(param)),
      code_(std::move(code)) {}

void bad_request(std::string_view param, std::string message) {
  throw ApiError(400, std::move(message), std::string(param));
}

std::string_view error_type(int status) {
  switch (status) {
    case 401:
      return "authentication_error";
    case 429:
      return "rate_limit_error";
    case 503:
      return "unavailable_error";
    default:
      return status >= 500 ? "server_error" : "invalid_request_error";
  }
}

Json error_json(int status, std::string_view message, std::string_view param,
                std::string_view code) {
  Json error = Json::object();
  error["message"] = printable(message);
  error["type"] = error_type(status);
  error["param"] = param.empty() ? Json(nullptr) : Json(printable(param));
  error["code"] = code.empty() ? Json(nullptr) : Json(std::string(code));
  Json body = Json::object();
  body["error"] = std::move(error);
  return body;
}

std::string error_body(int status, std::string_view message, std::string_view param,
                       std::string_view code) {
  return dump_json(error_json(status, message, param, code));
}

std::string error_body(const ApiError& error) {
  return error_body(error.status(), error.what(), error.param(), error.code());
}

std::string default_error_body(int status) {
  switch (status) {
    case 400:
      return error_body(400, "the HTTP request could not be parsed");
    case 404:
      return error_body(404, "no such route", "", "unknown_url");
    case 413:
      return error_body(413, "the request body is larger than the server accepts (--max-body)", "",
                        "request_too_large");
    case 500:
      return error_body(500, "internal server error");
    default:
      return error_body(status, "the request failed");
  }
}

}  // namespace dsa::server
