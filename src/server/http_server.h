// The HTTP transport of `dsa serve`, kept behind this one small interface so that the HTTP
// library (Debian's cpp-httplib) appears in a single translation unit, http_server.cc, and can be
// replaced without touching the API code.
//
// Every request, whatever its method and path, goes to one handler: routing, authentication and
// error shapes are the API layer's business. Errors the transport finds itself (a body over the
// size limit, a malformed request line) are answered with `error_body(status)`, so that they
// carry the same JSON shape as the API's own.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace dsa::server {

struct HttpRequest {
  std::string method;  // "GET", "POST", ...
  std::string path;    // without the query string
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;

  // The first header of that name (case-insensitive), or "" when there is none.
  std::string header(std::string_view name) const;
};

// Where a streamed body goes. write() returns false once the client is gone (the connection
// closed or reset, or a write timed out); every later write fails too, so a producer checks the
// result of each write and stops at the first false.
class ResponseStream {
 public:
  virtual ~ResponseStream() = default;
  virtual bool write(std::string_view data) = 0;
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
  // When set, the body is streamed instead (chunked transfer encoding): called once, on the
  // connection's thread, after the status and headers have gone out, and the response ends when
  // it returns.
  std::function<void(ResponseStream&)> stream;
};

using HttpHandler = std::function<HttpResponse(const HttpRequest&)>;

struct HttpServerOptions {
  std::string host = "127.0.0.1";
  int port = 8080;                          // 0: any free port (listen() returns it)
  size_t max_body_bytes = size_t(8) << 20;  // larger bodies get 413
  int read_timeout_seconds = 10;            // per read of the request
  int write_timeout_seconds = 10;           // per write of the response
  int keep_alive_timeout_seconds = 5;       // an idle kept-alive connection is closed after it
  int keep_alive_max_requests = 100;        // requests per connection
  int threads = 8;                          // connections served at once
  // The JSON body for an error status the transport produces itself (400, 413, 500).
  std::function<std::string(int status)> error_body;
};

class HttpServer {
 public:
  HttpServer(HttpServerOptions options, HttpHandler handler);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds the socket and returns the port (the chosen one for port 0). Throws dsa::Error when
  // the address cannot be bound. Connections wait in the kernel's backlog (SOMAXCONN of them)
  // until run().
  int listen();
  // Serves until stop(); call after listen(), typically on a thread of its own.
  void run();
  // Stops accepting, finishes the connections in progress, and makes run() return. Safe from any
  // thread; streamed responses must be able to end (their producers must see the end) for the
  // connection threads to finish.
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace dsa::server
