// The chat page `dsa serve` answers GET / (and /index.html) with: one self-contained HTML
// document, its CSS and JavaScript inline, that loads nothing from anywhere and talks only to
// this server's POST /v1/chat/completions (streamed) and GET /v1/models.
//
// What it does (docs/server.md): streams the reply as it arrives and keeps the conversation;
// reasoning is folded away in a <details>; tool calls show their name and arguments; a thinking
// switch (chat_template_kwargs.thinking), a stop button (aborts the fetch, which cancels the
// job on the server), and an API-key field (sent as "Authorization: Bearer", kept in
// localStorage). Model text reaches the DOM only as text (textContent and text nodes, never
// parsed as HTML).
//
// The page holds no secrets, so it is served without the API key; the API routes still want it.
#pragma once

#include <string_view>

#include "server/http_server.h"

namespace dsa::server {

// The document itself (UTF-8).
std::string_view web_page_html();

// 200 text/html; charset=utf-8, with headers that keep the browser from loading anything or
// connecting anywhere but this server while it shows the page.
HttpResponse web_page_response();

}  // namespace dsa::server
