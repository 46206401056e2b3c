// The HTTP transport on a real loopback socket. A burst of clients connecting at once must all
// get through the kernel's handshake: httplib's own listen backlog of 5 made the rest wait 1 s
// for their SYN to be sent again (tests/server/load_e2e.mjs found it: 42 of 64 streams started
// after 1.1 s). Checked without accepting anything, so that it does not depend on how quickly
// the accept thread runs: all the connections must wait in the backlog.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "server/http_server.h"

namespace dsa::server {
namespace {

constexpr int kClients = 64;

// A socket connecting to 127.0.0.1:port without blocking; -1 when it cannot even start.
int start_connect(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  if (fd < 0) return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(uint16_t(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0 &&
      errno != EINPROGRESS) {
    close(fd);
    return -1;
  }
  return fd;
}

// How many of `fds` finish their handshake within `ms`.
int connected_within(const std::vector<int>& fds, int ms) {
  std::vector<bool> done(fds.size());
  int count = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
  while (count < int(fds.size()) && std::chrono::steady_clock::now() < deadline) {
    std::vector<pollfd> waiting;
    std::vector<size_t> index;
    for (size_t i = 0; i < fds.size(); ++i) {
      if (!done[i]) {
        waiting.push_back({fds[i], POLLOUT, 0});
        index.push_back(i);
      }
    }
    if (poll(waiting.data(), waiting.size(), 20) < 0) break;
    for (size_t j = 0; j < waiting.size(); ++j) {
      if (!(waiting[j].revents & (POLLOUT | POLLERR | POLLHUP))) continue;
      int error = 0;
      socklen_t size = sizeof(error);
      getsockopt(waiting[j].fd, SOL_SOCKET, SO_ERROR, &error, &size);
      done[index[j]] = true;
      if (error == 0) ++count;
    }
  }
  return count;
}

// Sends a GET on a connected socket and reads the reply to its end (Connection: close).
std::string get(int fd) {
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
  timeval timeout{10, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  const std::string request = "GET /x HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
  if (send(fd, request.data(), request.size(), MSG_NOSIGNAL) != ssize_t(request.size())) return "";
  std::string reply;
  char buffer[4096];
  for (;;) {
    const ssize_t n = recv(fd, buffer, sizeof(buffer), 0);
    if (n <= 0) break;
    reply.append(buffer, size_t(n));
  }
  return reply;
}

TEST(HttpServer, BurstOfConnectionsWaitsInTheBacklogAndIsServed) {
  HttpServerOptions options;
  options.port = 0;
  options.threads = 4;
  HttpServer server(options, [](const HttpRequest& req) {
    HttpResponse r;
    r.content_type = "text/plain";
    r.body = "hello " + req.path;
    return r;
  });
  const int port = server.listen();
  ASSERT_GT(port, 0);

  // Nothing accepts yet (run() has not been called): every handshake the kernel completes
  // waits in the backlog, and those beyond it have their SYN dropped.
  std::vector<int> fds;
  for (int i = 0; i < kClients; ++i) {
    const int fd = start_connect(port);
    ASSERT_GE(fd, 0) << "socket or connect failed: " << strerror(errno);
    fds.push_back(fd);
  }
  EXPECT_EQ(connected_within(fds, 500), kClients) << "connections beyond the listen backlog";

  std::thread serving([&] { server.run(); });
  for (int fd : fds) {
    const std::string reply = get(fd);
    EXPECT_TRUE(reply.starts_with("HTTP/1.1 200")) << reply;
    EXPECT_TRUE(reply.ends_with("hello /x")) << reply;
    close(fd);
  }
  server.stop();
  serving.join();
}

}  // namespace
}  // namespace dsa::server
