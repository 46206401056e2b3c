// The only file that includes httplib.h (see http_server.h). Debian's cpp-httplib 0.11 is a
// compiled library whose class layouts depend on the macros its pkg-config file defines
// (CPPHTTPLIB_OPENSSL_SUPPORT and others), so the build takes the compile flags from there.
#include "server/http_server.h"

#include <httplib.h>
#include <strings.h>
#include <sys/socket.h>

#include <atomic>
#include <utility>

#include "core/error.h"

namespace dsa::server {
namespace {

// A streamed body over httplib's DataSink. After the first failed write it fails every write
// without touching the socket again.
class SinkStream final : public ResponseStream {
 public:
  explicit SinkStream(httplib::DataSink& sink) : sink_(sink) {}
  bool write(std::string_view data) override {
    if (failed_) return false;
    if (data.empty()) return true;
    if (!sink_.write(data.data(), data.size())) failed_ = true;
    return !failed_;
  }
  bool failed() const { return failed_; }

 private:
  httplib::DataSink& sink_;
  bool failed_ = false;
};

HttpRequest to_request(const httplib::Request& req, std::string body) {
  HttpRequest out;
  out.method = req.method;
  out.path = req.path;
  out.body = std::move(body);
  out.headers.reserve(req.headers.size());
  for (const auto& [name, value] : req.headers) out.headers.emplace_back(name, value);
  return out;
}

void fill_response(HttpResponse&& in, httplib::Response& res) {
  res.status = in.status;
  for (const auto& [name, value] : in.headers) res.set_header(name, value);
  if (!in.stream) {
    res.set_content(in.body, in.content_type);
    return;
  }
  // httplib calls the provider until it reports done; ours streams everything in its first call.
  // Returning false after a failed write makes httplib close the connection.
  res.set_chunked_content_provider(
      in.content_type, [stream = std::move(in.stream)](size_t, httplib::DataSink& sink) {
        SinkStream out(sink);
        stream(out);
        if (out.failed()) return false;
        sink.done();
        return true;
      });
}

}  // namespace

std::string HttpRequest::header(std::string_view name) const {
  for (const auto& [key, value] : headers) {
    if (key.size() == name.size() && strncasecmp(key.data(), name.data(), name.size()) == 0) {
      return value;
    }
  }
  return "";
}

struct HttpServer::Impl {
  HttpServerOptions options;
  HttpHandler handler;
  httplib::Server server;
  std::atomic<bool> bound{false};
  std::atomic<bool> stop_requested{false};
  socket_t socket = INVALID_SOCKET;  // the listening socket, once bound
};

HttpServer::HttpServer(HttpServerOptions options, HttpHandler handler)
    : impl_(std::make_unique<Impl>()) {
  impl_->options = std::move(options);
  impl_->handler = std::move(handler);
  httplib::Server& s = impl_->server;
  const HttpServerOptions& o = impl_->options;
  const size_t threads = size_t(std::max(1, o.threads));
  s.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  s.set_payload_max_length(o.max_body_bytes);
  s.set_read_timeout(o.read_timeout_seconds, 0);
  s.set_write_timeout(o.write_timeout_seconds, 0);
  s.set_keep_alive_timeout(o.keep_alive_timeout_seconds);
  s.set_keep_alive_max_count(size_t(std::max(1, o.keep_alive_max_requests)));
  s.set_tcp_nodelay(true);  // SSE chunks are small and must not wait for Nagle's timer
  // httplib's default also sets SO_REUSEPORT, which lets a second server bind the same port and
  // take half of its connections; a port in use must be an error instead.
  // httplib passes every socket it tries to this, then binds it or closes it and tries the next:
  // the last one passed is the one that was bound (listen() raises its backlog).
  s.set_socket_options([impl = impl_.get()](socket_t sock) {
    const int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
    impl->socket = sock;
  });

  const auto dispatch = [impl = impl_.get()](const httplib::Request& req, std::string body,
                                             httplib::Response& res) {
    fill_response(impl->handler(to_request(req, std::move(body))), res);
  };
  const httplib::Server::Handler all =
      [dispatch](const httplib::Request& req, httplib::Response& res) { dispatch(req, "", res); };
  // Bodies are read through a content reader: httplib's plain handlers refuse bodies over 8 KiB
  // sent as application/x-www-form-urlencoded, which is what `curl -d` sends by default, and
  // parse them as a form besides. The size limit (set_payload_max_length) holds either way.
  const httplib::Server::HandlerWithContentReader with_body = [dispatch](
                                                                  const httplib::Request& req,
                                                                  httplib::Response& res,
                                                                  const httplib::ContentReader&
                                                                      reader) {
    std::string body;
    const bool complete = reader([&body](const char* data, size_t size) {
      body.append(data, size);
      return true;
    });
    if (!complete) {  // over the limit (httplib set 413) or cut short: the error handler answers
      if (res.status < 400) res.status = 400;
      return;
    }
    dispatch(req, std::move(body), res);
  };
  s.Get(".*", all);  // HEAD too
  s.Post(".*", with_body);
  s.Put(".*", with_body);
  s.Patch(".*", with_body);
  s.Delete(".*", all);
  s.Options(".*", all);

  // Statuses httplib sets itself (413 for a body over the limit, 400 for a request it cannot
  // parse) arrive here with an empty body; the handler's own errors already have one.
  s.set_error_handler(httplib::Server::HandlerWithResponse(
      [impl = impl_.get()](const httplib::Request&, httplib::Response& res) {
        if (!res.body.empty() || !impl->options.error_body) {
          return httplib::Server::HandlerResponse::Unhandled;
        }
        res.set_content(impl->options.error_body(res.status), "application/json");
        return httplib::Server::HandlerResponse::Handled;
      }));
  // The handler turns every error it knows into a response; anything escaping it is a bug, which
  // must still not take the server down or leave the client without an answer.
  s.set_exception_handler(
      [impl = impl_.get()](const httplib::Request&, httplib::Response& res, std::exception_ptr) {
        res.status = 500;
        res.set_content(impl->options.error_body ? impl->options.error_body(500) : "",
                        "application/json");
      });
}

HttpServer::~HttpServer() { stop(); }

int HttpServer::listen() {
  const HttpServerOptions& o = impl_->options;
  int port = o.port;
  if (port == 0) {
    port = impl_->server.bind_to_any_port(o.host);
    if (port < 0) fail("cannot bind {} to a free port", o.host);
  } else if (!impl_->server.bind_to_port(o.host, port)) {
    fail("cannot bind {}:{} (in use, or not an address of this machine?)", o.host, port);
  }
  // httplib's compiled library listens with a backlog of 5 (CPPHTTPLIB_LISTEN_BACKLOG): in a
  // burst of connections (64 clients at once) the kernel drops the SYNs beyond it whenever the
  // accept thread is not scheduled in time, and each of those clients waits for the SYN to be
  // sent again, 1 s later (3 s the next time). Listening again on a listening socket only
  // changes its backlog (Linux).
  if (::listen(impl_->socket, SOMAXCONN) != 0) fail("cannot listen on {}:{}", o.host, port);
  impl_->bound = true;
  return port;
}

void HttpServer::run() {
  DSA_CHECK(impl_->bound, "HttpServer::run before listen");
  if (!impl_->stop_requested) impl_->server.listen_after_bind();
}

void HttpServer::stop() {
  impl_->stop_requested = true;
  if (impl_->server.is_running()) impl_->server.stop();
}

}  // namespace dsa::server
