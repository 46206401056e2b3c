#include "server/web_page.h"

namespace dsa::server {
namespace {

// The whole page. Kept as one readable document rather than generated or minified, so that what
// the browser runs is what this file shows. Rules the script keeps:
//   - model and user text goes into the DOM as text nodes or textContent only (no innerHTML
//     anywhere), so a reply that looks like HTML is shown, never parsed;
//   - requests go to relative URLs (v1/...), so the page works behind a proxy that mounts the
//     server under a path;
//   - the conversation sent back holds what the user saw: the replies' content, not their
//     reasoning (the V3.2 encoder drops earlier reasoning at a new user turn anyway).
constexpr std::string_view kPage = R"html(<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>dsa chat</title>
<style>
  :root {
    color-scheme: light dark;
    --bg: #fafafa; --fg: #1d1d1f; --muted: #6b6b70; --line: #d9d9de;
    --user: #e6eefc; --bot: #ffffff; --accent: #2f6fd6; --warn: #8a5a00; --err: #b3261e;
    --code: #f1f1f4;
  }
  @media (prefers-color-scheme: dark) {
    :root {
      --bg: #17181b; --fg: #e8e8ea; --muted: #9a9aa2; --line: #34353b;
      --user: #22324d; --bot: #1f2024; --accent: #7aa7ff; --warn: #e0b25c; --err: #ff8a80;
      --code: #26272c;
    }
  }
  * { box-sizing: border-box; }
  html, body { height: 100%; margin: 0; }
  body {
    display: flex; flex-direction: column; background: var(--bg); color: var(--fg);
    font: 15px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif;
  }
  header {
    display: flex; align-items: center; gap: 12px; padding: 8px 16px;
    border-bottom: 1px solid var(--line);
  }
  header h1 { font-size: 16px; margin: 0; }
  #model { color: var(--muted); font-size: 13px; flex: 1; }
  button {
    font: inherit; padding: 6px 14px; border-radius: 8px; border: 1px solid var(--line);
    background: var(--bot); color: var(--fg); cursor: pointer;
  }
  button:disabled { opacity: 0.45; cursor: default; }
  button.primary { background: var(--accent); border-color: var(--accent); color: #fff; }
  #settings { padding: 0 16px; border-bottom: 1px solid var(--line); }
  #settings summary { padding: 8px 0; cursor: pointer; color: var(--muted); }
  #settings .grid {
    display: grid; grid-template-columns: repeat(auto-fill, minmax(220px, 1fr));
    gap: 8px 16px; padding-bottom: 12px;
  }
  #settings label { display: flex; flex-direction: column; font-size: 13px; color: var(--muted); }
  #settings label.wide { grid-column: 1 / -1; }
  #settings label.switch { flex-direction: row; align-items: center; gap: 8px; }
  input, textarea {
    font: inherit; color: var(--fg); background: var(--bot); border: 1px solid var(--line);
    border-radius: 6px; padding: 5px 8px;
  }
  #log { flex: 1; overflow-y: auto; padding: 16px; }
  .msg {
    max-width: 860px; margin: 0 auto 12px; padding: 10px 14px; border-radius: 10px;
    border: 1px solid var(--line); background: var(--bot);
  }
  .msg.user { background: var(--user); }
  .msg.dropped { opacity: 0.55; }
  .role { font-size: 12px; color: var(--muted); margin-bottom: 2px; }
  .text { white-space: pre-wrap; overflow-wrap: anywhere; }
  .reasoning { margin-bottom: 6px; color: var(--muted); }
  .reasoning summary { cursor: pointer; font-size: 13px; }
  .reasoning .text { font-size: 13px; border-left: 3px solid var(--line); padding-left: 8px; }
  .tool-call { margin-top: 6px; border: 1px solid var(--line); border-radius: 6px; padding: 6px 8px; }
  .tool-name { font-weight: 600; font-family: ui-monospace, monospace; }
  .tool-args {
    margin: 4px 0 0; padding: 6px; background: var(--code); border-radius: 4px;
    white-space: pre-wrap; overflow-wrap: anywhere; font-size: 13px;
  }
  .meta { font-size: 12px; color: var(--muted); margin-top: 4px; }
  .warning { font-size: 12px; color: var(--warn); }
  .error { color: var(--err); white-space: pre-wrap; }
  footer { border-top: 1px solid var(--line); padding: 10px 16px; }
  #composer { max-width: 860px; margin: 0 auto; display: flex; gap: 8px; align-items: flex-end; }
  #input { flex: 1; resize: vertical; min-height: 44px; max-height: 40vh; }
</style>
</head>
<body>
<header>
  <h1>dsa chat</h1>
  <span id="model">connecting…</span>
  <button id="new-chat" type="button">New chat</button>
</header>
<details id="settings">
  <summary>Settings</summary>
  <form class="grid" autocomplete="off">
    <label class="switch"><input id="thinking" type="checkbox" data-store="thinking"> Thinking</label>
    <label title="sent as Authorization: Bearer KEY; kept in this browser's localStorage">API key
      <input id="api-key" type="password" autocomplete="off" data-store="apiKey"></label>
    <label>Max tokens <input id="max-tokens" type="number" min="1" placeholder="no limit" data-store="maxTokens"></label>
    <label>Temperature <input id="temperature" type="number" min="0" max="2" step="0.1" placeholder="server default" data-store="temperature"></label>
    <label>Seed <input id="seed" type="number" step="1" placeholder="random" data-store="seed"></label>
    <label class="wide">System prompt <textarea id="system" rows="2" data-store="system"></textarea></label>
    <label class="wide">Extra request fields (a JSON object merged into each request, e.g. {"top_k": 20, "stop": ["\n\n"]})
      <textarea id="extra" rows="2" spellcheck="false" data-store="extra"></textarea></label>
  </form>
</details>
<main id="log"></main>
<footer>
  <div id="composer">
    <textarea id="input" rows="2" placeholder="Message (Enter sends, Shift+Enter is a new line)"></textarea>
    <button id="send" class="primary" type="button">Send</button>
    <button id="stop" type="button" disabled>Stop</button>
  </div>
</footer>
<script>
'use strict';
const $ = (id) => document.getElementById(id);
const log = $('log'), input = $('input'), sendButton = $('send'), stopButton = $('stop');

// An element with a class and, optionally, text: the only way text enters the page.
function element(tag, className, text) {
  const e = document.createElement(tag);
  if (className) e.className = className;
  if (text !== undefined) e.textContent = text;
  return e;
}

// --- settings, kept in localStorage (which may be unavailable: then they last one visit) ------

const storage = {
  get(key) { try { return localStorage.getItem('dsa.' + key); } catch { return null; } },
  set(key, value) { try { localStorage.setItem('dsa.' + key, value); } catch { /* private mode */ } },
};
for (const field of document.querySelectorAll('[data-store]')) {
  const saved = storage.get(field.dataset.store);
  const checkbox = field.type === 'checkbox';
  if (saved !== null) checkbox ? (field.checked = saved === 'true') : (field.value = saved);
  const save = () => storage.set(field.dataset.store, checkbox ? String(field.checked) : field.value);
  field.addEventListener(checkbox ? 'change' : 'input', save);
}
$('api-key').addEventListener('change', loadModel);
document.querySelector('#settings form').addEventListener('submit', (e) => e.preventDefault());

function headers() {
  const h = { 'Content-Type': 'application/json' };
  const key = $('api-key').value.trim();
  if (key) h.Authorization = 'Bearer ' + key;
  return h;
}

// The server's error message, from its OpenAI-shaped body when there is one.
async function errorMessage(response) {
  let message = `HTTP ${response.status}`;
  try {
    const body = await response.json();
    if (body && body.error && body.error.message) message += ': ' + body.error.message;
  } catch { /* not JSON */ }
  if (response.status === 401) message += ' (set the API key under Settings)';
  return message;
}

async function loadModel() {
  const label = $('model');
  try {
    const r = await fetch('v1/models', { headers: headers() });
    if (!r.ok) throw new Error(await errorMessage(r));
    const list = await r.json();
    label.textContent = list.data.map((m) => m.id).join(', ');
  } catch (e) {
    label.textContent = e.message;
  }
}

// --- the conversation ----------------------------------------------------------------------

let history = [];        // the messages sent with the next request: {role, content}
let controller = null;   // the running request's AbortController

function scrollDown(force) {
  if (force || log.scrollHeight - log.scrollTop - log.clientHeight < 80) {
    log.scrollTop = log.scrollHeight;
  }
}

function userMessage(text) {
  const root = element('article', 'msg user');
  root.append(element('div', 'role', 'You'), element('div', 'text', text));
  log.append(root);
  scrollDown(true);
  return root;
}

// One assistant reply being streamed: its parts are created when their first delta arrives.
class Reply {
  constructor() {
    this.root = element('article', 'msg assistant');
    this.root.append(element('div', 'role', 'Assistant'));
    this.reasoningBox = element('details', 'reasoning');  // closed: the reasoning folded away
    this.reasoningSummary = element('summary', '', 'Thinking…');
    this.reasoningText = document.createTextNode('');
    const reasoningDiv = element('div', 'text');
    reasoningDiv.append(this.reasoningText);
    this.reasoningBox.append(this.reasoningSummary, reasoningDiv);
    this.reasoningBox.hidden = true;
    this.contentText = document.createTextNode('');
    const contentDiv = element('div', 'text content');
    contentDiv.append(this.contentText);
    this.calls = new Map();  // tool-call index -> {name, args, nameEl, argsEl}
    this.callsBox = element('div', 'tool-calls');
    this.meta = element('div', 'meta', 'waiting…');
    this.root.append(this.reasoningBox, contentDiv, this.callsBox, this.meta);
    log.append(this.root);
    this.content = '';
    this.reasoning = '';
    this.finish = null;
    this.usage = null;
    this.pieces = 0;
    this.warnings = [];
  }

  // One parsed SSE chunk of /v1/chat/completions.
  apply(chunk) {
    if (chunk.error) throw new Error(chunk.error.message || 'the server reported an error');
    if (chunk.usage) this.usage = chunk.usage;
    const choice = chunk.choices && chunk.choices[0];
    if (!choice) return;
    const delta = choice.delta || {};
    const reasoning = delta.reasoning_content ?? delta.reasoning;
    if (reasoning) {
      this.reasoningBox.hidden = false;
      this.reasoning += reasoning;
      this.reasoningText.appendData(reasoning);
      this.pieces++;
    }
    if (delta.content) {
      if (this.reasoning) this.reasoningSummary.textContent = 'Reasoning';
      this.content += delta.content;
      this.contentText.appendData(delta.content);
      this.pieces++;
    }
    for (const call of delta.tool_calls || []) this.toolCall(call);
    if (choice.finish_reason) this.finish = choice.finish_reason;
    if (Array.isArray(choice.warnings)) this.warnings.push(...choice.warnings);
    if (this.pieces) this.meta.textContent = 'writing…';
    scrollDown(false);
  }

  // A tool call arrives as deltas of one index: the first names it, later ones add arguments.
  toolCall(delta) {
    const index = delta.index ?? this.calls.size;
    let call = this.calls.get(index);
    if (!call) {
      call = { name: '', args: '', nameEl: element('div', 'tool-name'),
               argsEl: element('pre', 'tool-args') };
      const box = element('div', 'tool-call');
      box.append(call.nameEl, call.argsEl);
      this.callsBox.append(box);
      this.calls.set(index, call);
    }
    const fn = delta.function || {};
    if (fn.name) call.name += fn.name;
    if (fn.arguments) call.args += fn.arguments;
    call.nameEl.textContent = 'tool call: ' + call.name;
    call.argsEl.textContent = call.args;
  }

  // The stream ended (normally, stopped, or with an error).
  end(outcome, seconds) {
    if (this.reasoning) this.reasoningSummary.textContent = 'Reasoning';
    for (const call of this.calls.values()) {  // arguments are whole now: show them indented
      try { call.argsEl.textContent = JSON.stringify(JSON.parse(call.args), null, 2); } catch { }
    }
    const parts = [outcome];
    if (this.usage) {
      const n = this.usage.completion_tokens;
      parts.push(`${n} tokens`);
      if (seconds > 0) parts.push(`${(n / seconds).toFixed(1)} tokens/s`);
    }
    this.meta.textContent = parts.join(' · ');
    for (const w of this.warnings) this.root.append(element('div', 'warning', 'warning: ' + w));
  }

  fail(message) {
    const e = element('div', 'error', message);
    e.setAttribute('role', 'alert');
    this.root.append(e);
  }
}

// Reads a text/event-stream body, calling onData with each event's parsed JSON; returns true
// when the stream ended with [DONE].
async function readEvents(response, onData) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  let data = [];
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return false;
    buffer += value;
    let newline;
    while ((newline = buffer.indexOf('\n')) >= 0) {
      let line = buffer.slice(0, newline);
      buffer = buffer.slice(newline + 1);
      if (line.endsWith('\r')) line = line.slice(0, -1);
      if (line.startsWith('data:')) {
        data.push(line.slice(line.startsWith('data: ') ? 6 : 5));
      } else if (line === '' && data.length) {  // a blank line ends the event
        const payload = data.join('\n');
        data = [];
        if (payload === '[DONE]') return true;
        onData(JSON.parse(payload));
      }
    }
  }
}

function optionalNumber(id, name, body) {
  const v = $(id).value.trim();
  if (v !== '') body[name] = Number(v);
}

function requestBody(messages) {
  const system = $('system').value.trim();
  const body = {
    messages: [...(system ? [{ role: 'system', content: system }] : []), ...messages],
    stream: true,
    stream_options: { include_usage: true },
    chat_template_kwargs: { thinking: $('thinking').checked },
  };
  optionalNumber('max-tokens', 'max_tokens', body);
  optionalNumber('temperature', 'temperature', body);
  optionalNumber('seed', 'seed', body);
  const extra = $('extra').value.trim();
  if (extra) {
    let fields;
    try { fields = JSON.parse(extra); } catch (e) { throw new Error('Extra request fields: ' + e.message); }
    if (typeof fields !== 'object' || fields === null || Array.isArray(fields)) {
      throw new Error('Extra request fields must be a JSON object');
    }
    Object.assign(body, fields);
  }
  return body;
}

function notice(message) {
  const e = element('div', 'msg error', message);
  e.setAttribute('role', 'alert');
  log.append(e);
  scrollDown(true);
}

function setBusy(busy) {
  sendButton.disabled = busy;
  stopButton.disabled = !busy;
  document.body.dataset.busy = busy ? 'true' : 'false';
}

async function send() {
  const text = input.value;
  if (controller || text.trim() === '') return;
  // This turn belongs to the conversation it started in, even if "New chat" replaces it.
  const conversation = history;
  const turn = { role: 'user', content: text };
  let body;
  try {
    body = requestBody([...conversation, turn]);
  } catch (e) {
    notice(e.message);
    return;
  }
  input.value = '';
  const userEl = userMessage(text);
  const reply = new Reply();
  controller = new AbortController();
  setBusy(true);
  const started = performance.now();
  let outcome;
  try {
    const response = await fetch('v1/chat/completions', {
      method: 'POST', headers: headers(), body: JSON.stringify(body), signal: controller.signal,
    });
    if (!response.ok) throw new Error(await errorMessage(response));
    const done = await readEvents(response, (chunk) => reply.apply(chunk));
    if (!done) throw new Error('the stream ended before [DONE]');
    outcome = 'finish: ' + (reply.finish || 'none');
  } catch (e) {
    if (e.name === 'AbortError') {
      outcome = 'stopped';
    } else {
      outcome = 'failed';
      reply.fail(e.message);
    }
  }
  reply.end(outcome, (performance.now() - started) / 1000);
  // A reply that wrote anything joins the conversation (a stopped one with what had arrived;
  // one that only reasoned with empty content). An empty one (an error, a stop before the first
  // token) leaves the turn out, and its text goes back into the box to be sent again. Tool calls
  // are shown but not sent back: the page has no tools to run and answer them with.
  if (reply.content || reply.reasoning || reply.calls.size) {
    conversation.push(turn, { role: 'assistant', content: reply.content });
  } else {
    userEl.classList.add('dropped');
    reply.root.classList.add('dropped');
    if (input.value === '' && conversation === history) input.value = text;
  }
  controller = null;
  setBusy(false);
  input.focus();
}

sendButton.addEventListener('click', send);
stopButton.addEventListener('click', () => { if (controller) controller.abort(); });
input.addEventListener('keydown', (e) => {
  if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    send();
  }
});
$('new-chat').addEventListener('click', () => {
  if (controller) controller.abort();
  history = [];
  log.replaceChildren();
  input.focus();
});

setBusy(false);
loadModel();
input.focus();
</script>
</body>
</html>
)html";

}  // namespace

std::string_view web_page_html() { return kPage; }

HttpResponse web_page_response() {
  HttpResponse r;
  r.content_type = "text/html; charset=utf-8";
  r.body = std::string(kPage);
  // The page needs its inline style and script and this server, nothing else: no other origin
  // can be reached from it, whatever text it shows, and it cannot be framed by another site.
  r.headers = {{"Content-Security-Policy",
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"},
               {"X-Content-Type-Options", "nosniff"},
               {"Cache-Control", "no-cache"}};
  return r;
}

}  // namespace dsa::server
