// The chat page's route, in process: served at / and /index.html without the API key (and while
// the model loads), as one self-contained HTML document, while the API keeps wanting the key.
// What the page does in a browser is tested in web_page_e2e.mjs (chromium via playwright-core).
#include <gtest/gtest.h>

#include <string>

#include "server/api_server.h"
#include "server/web_page.h"

namespace dsa::server {
namespace {

HttpRequest request(std::string method, std::string path) {
  return HttpRequest{std::move(method), std::move(path), "", {}};
}

std::string header(const HttpResponse& r, const std::string& name) {
  for (const auto& [key, value] : r.headers) {
    if (key == name) return value;
  }
  return "";
}

TEST(WebPage, ServedWithoutTheKeyWhileTheApiWantsIt) {
  Metrics metrics;
  Engine engine(EngineOptions{}, metrics);  // never started: the model is still "loading"
  ApiServer api(ApiOptions{"tiny", "sekret", 64}, engine, metrics);
  for (const char* path : {"/", "/index.html"}) {
    for (const char* method : {"GET", "HEAD"}) {
      const HttpResponse r = api.handle(request(method, path));
      EXPECT_EQ(r.status, 200) << method << " " << path;
      EXPECT_EQ(r.content_type, "text/html; charset=utf-8");
      EXPECT_EQ(r.body, web_page_html());
      EXPECT_NE(header(r, "Content-Security-Policy").find("default-src 'none'"), std::string::npos);
    }
  }
  EXPECT_EQ(api.handle(request("POST", "/")).status, 405);
  EXPECT_EQ(api.handle(request("GET", "/v1/models")).status, 401);
  EXPECT_EQ(api.handle(request("GET", "/page.html")).status, 404);
}

TEST(WebPage, SelfContainedAndWithoutHtmlSinks) {
  const std::string_view page = web_page_html();
  EXPECT_TRUE(page.starts_with("<!doctype html>"));
  EXPECT_TRUE(page.ends_with("</html>\n"));
  // Nothing loaded from elsewhere: no src= or href= attributes, no absolute URLs.
  for (const char* needle : {"src=", "href=", "http://", "https://", "//cdn"}) {
    EXPECT_EQ(page.find(needle), std::string_view::npos) << needle;
  }
  // Model text must never be parsed as HTML.
  for (const char* sink : {"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write"}) {
    EXPECT_EQ(page.find(sink), std::string_view::npos) << sink;
  }
  // What the page sends: streamed chat, the thinking switch, the key as a Bearer header.
  for (const char* part : {"v1/chat/completions", "stream: true", "chat_template_kwargs",
                           "'Bearer '", "localStorage", "<details"}) {
    EXPECT_NE(page.find(part), std::string_view::npos) << part;
  }
}

}  // namespace
}  // namespace dsa::server
