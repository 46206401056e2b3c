// Errors of the OpenAI-compatible API, in OpenAI's JSON shape:
//   {"error": {"message": "...", "type": "invalid_request_error", "param": "top_p", "code": null}}
// Request handling throws ApiError; the API layer turns it into the status and body. Messages
// quote request text only through printable() (core/printable.h), so an error body is valid UTF-8
// and carries no control bytes whatever the request held.
#pragma once

#include <stdexcept>
#include <string>
#include <string_view>

#include "server/json_out.h"

namespace dsa::server {

class ApiError : public std::runtime_error {
 public:
  // `param`: the request field at fault ("" for none); `code`: OpenAI's short code ("" for none).
  ApiError(int status, std::string message, std::string param = "", std::string code = "");

  int status() const { return status_; }
  const std::string& param() const { return param_; }
  const std::string& code() const { return code_; }

 private:
  int status_;
  std::string param_;
  std::string code_;
};

// A 400 naming the field.
[[noreturn]] void bad_request(std::string_view param, std::string message);

// OpenAI's error type for a status: "invalid_request_error" (400, 404, 413), "authentication_error"
// (401), "rate_limit_error" (429), "unavailable_error" (503), "server_error" (5xx).
std::string_view error_type(int status);

// The JSON body. `message` is passed through printable() again: the last line of defence.
Json error_json(int status, std::string_view message, std::string_view param = "",
                std::string_view code = "");
std::string error_body(int status, std::string_view message, std::string_view param = "",
                       std::string_view code = "");
std::string error_body(const ApiError& error);

// The body for a status without a message of its own (the transport's 413, a 404 route...).
std::string default_error_body(int status);

}  // namespace dsa::server
