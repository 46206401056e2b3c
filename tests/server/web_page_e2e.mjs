// End-to-end test of the chat page that `dsa serve` answers GET / with (src/server/web_page.cc),
// in a real browser: Debian's chromium, driven headless by playwright-core (scripts/npm,
// pinned; no browser download), against the real server on loopback running the built-in
// model with an API key.
//
//   node tests/server/web_page_e2e.mjs path/to/dsa
//
// The page is checked as a user meets it: type, send, read the streamed reply, carry on the
// conversation, fold the reasoning, stop a long generation, and never see model text parsed as
// HTML. Each reply the page shows is compared with the server's whole reply to the very request
// the page sent. The built-in model cannot be made to write HTML or a valid tool call, so those
// two are also fed to the page as a scripted stream, in the server's chunk format, through the
// browser's own fetch (Playwright's request interception). Exits 77 (ctest: skipped) without
// a built-in model, without playwright-core, or without chromium (DSA_CHROMIUM, default
// /usr/bin/chromium).
import assert from 'node:assert/strict';
import fs from 'node:fs';

import { abortCount, dsaFromArgs, requirePackage, runSuite, skip, waitAborted }
  from './serve_helper.mjs';

const dsa = dsaFromArgs('web_page_e2e.mjs');
const { chromium } = requirePackage('playwright-core');
const chromiumPath = process.env.DSA_CHROMIUM ?? '/usr/bin/chromium';
if (!fs.existsSync(chromiumPath)) skip(`no chromium at ${chromiumPath} (scripts/setup.sh installs it)`);

const KEY = 'page-key';
const MODEL = 'dsa-small';
const PAGE_PATHS = new Set(['/', '/favicon.ico', '/v1/models', '/v1/chat/completions']);

// --- helpers --------------------------------------------------------------------------------

// A fresh browser context (its own localStorage) with the page's settings preset: the keys of
// its data-store fields (apiKey, thinking, maxTokens, temperature, seed, system, extra).
async function openPage({ browser, base }, settings = {}) {
  const context = await browser.newContext();
  await context.addInitScript((s) => {
    for (const [k, v] of Object.entries(s)) localStorage.setItem(`dsa.${k}`, v);
  }, settings);
  const page = await context.newPage();
  const urls = [];
  const errors = [];
  page.on('request', (r) => urls.push(r.url()));
  page.on('pageerror', (e) => errors.push(e));
  await page.goto(`${base}/`);
  // Closes the page, checking that it threw nothing and asked only this server for its routes.
  page.done = async () => {
    await context.close();
    assert.deepEqual(errors, [], 'the page threw');
    for (const url of urls) {
      assert.ok(url.startsWith(`${base}/`), `the page reached another origin: ${url}`);
      assert.ok(PAGE_PATHS.has(new URL(url).pathname), `unexpected request ${url}`);
    }
  };
  return page;
}

// Types `text`, sends it with Enter, waits for the reply to end, and returns what the page shows
// of it along with the request body and headers the page sent.
async function send(page, text, { until = 'end' } = {}) {
  const before = await page.locator('.msg.assistant').count();
  const request = page.waitForRequest((r) => r.url().endsWith('/v1/chat/completions'));
  await page.fill('#input', text);
  await page.press('#input', 'Enter');
  const sent = await request;
  if (until === 'end') await waitIdle(page, before + 1);
  return { request: JSON.parse(sent.postData()), headers: sent.headers(), shown: () => shown(page) };
}

async function waitIdle(page, replies) {
  await page.waitForFunction((n) => document.querySelectorAll('.msg.assistant').length === n &&
                                    document.body.dataset.busy === 'false', replies);
}

// The last reply as the page shows it.
function shown(page) {
  return page.evaluate(() => {
    const reply = [...document.querySelectorAll('.msg.assistant')].at(-1);
    const details = reply.querySelector('details.reasoning');
    return {
      content: reply.querySelector('.content').textContent,
      reasoning: details.querySelector('.text').textContent,
      reasoningShown: !details.hidden,
      reasoningOpen: details.open,
      calls: [...reply.querySelectorAll('.tool-call')].map((c) => ({
        name: c.querySelector('.tool-name').textContent,
        args: c.querySelector('.tool-args').textContent })),
      meta: reply.querySelector('.meta').textContent,
      warnings: [...reply.querySelectorAll('.warning')].map((w) => w.textContent),
      errors: [...reply.querySelectorAll('.error')].map((w) => w.textContent),
      elements: [...reply.querySelectorAll('*')].map((e) => e.tagName.toLowerCase()),
    };
  });
}

// The server's whole (unstreamed) reply to the request the page streamed.
async function wholeReply(base, body) {
  const { stream, stream_options, ...whole } = body;
  const r = await fetch(`${base}/v1/chat/completions`, {
    method: 'POST', body: JSON.stringify(whole),
    headers: { 'content-type': 'application/json', authorization: `Bearer ${KEY}` } });
  assert.equal(r.status, 200);
  return (await r.json()).choices[0];
}

// The tags the page itself builds for a reply; anything else came from parsing model text.
const REPLY_TAGS = new Set(['div', 'details', 'summary', 'pre']);

// --- the tests ------------------------------------------------------------------------------

const tests = [];
const test = (name, fn) => tests.push({ name, fn });

test('the page is served without the key; the API still wants it', async ({ base }) => {
  for (const route of ['/', '/index.html']) {
    const r = await fetch(`${base}${route}`);
    assert.equal(r.status, 200);
    assert.equal(r.headers.get('content-type'), 'text/html; charset=utf-8');
    assert.match(r.headers.get('content-security-policy'), /default-src 'none'/);
    const html = await r.text();
    assert.ok(html.startsWith('<!doctype html>'));
    // Self-contained: no external scripts, styles, images or links; and no HTML-parsing sinks.
    assert.doesNotMatch(html, /\b(src|href)\s*=/i);
    assert.doesNotMatch(html, /innerHTML|outerHTML|insertAdjacentHTML|document\.write/);
  }
  assert.equal((await fetch(`${base}/v1/models`)).status, 401);
  const post = await fetch(`${base}/`, { method: 'POST', body: '{}' });
  assert.equal(post.status, 405);
});

test('without the key the request fails with a hint, and the text is kept', async (ctx) => {
  const page = await openPage(ctx);
  await page.waitForFunction(() => document.getElementById('model').textContent.includes('401'));
  await send(page, 'Hello');
  const s = await page.evaluate(() => document.querySelector('.msg.assistant .error').textContent);
  assert.match(s, /HTTP 401: .*API key/);
  assert.equal(await page.inputValue('#input'), 'Hello', 'the text goes back into the box');
  assert.equal(await page.locator('.msg.user.dropped').count(), 1);
  await page.done();
});

test('the API key is kept in localStorage', async ({ browser, base }) => {
  const page = await openPage({ browser, base });
  await page.click('#settings summary');
  await page.fill('#api-key', KEY);
  await page.press('#api-key', 'Tab');  // "change": the page lists the models with the key
  await page.waitForFunction((m) => document.getElementById('model').textContent === m, MODEL);
  await page.reload();
  assert.equal(await page.inputValue('#api-key'), KEY);
  await page.waitForFunction((m) => document.getElementById('model').textContent === m, MODEL);
  await page.done();
});

test('a streamed reply appears, equal to the whole reply; the conversation is kept',
     async (ctx) => {
  const page = await openPage(ctx, { apiKey: KEY, seed: '7', maxTokens: '24' });
  const first = await send(page, 'Hello there');
  assert.equal(first.headers.authorization, `Bearer ${KEY}`);
  assert.deepEqual(first.request, {
    messages: [{ role: 'user', content: 'Hello there' }], stream: true,
    stream_options: { include_usage: true }, chat_template_kwargs: { thinking: false },
    max_tokens: 24, seed: 7 });
  const a = await first.shown();
  const whole = await wholeReply(ctx.base, first.request);
  assert.ok(a.content.length > 0, 'a reply appeared');
  assert.equal(a.content, whole.message.content);
  assert.equal(a.reasoningShown, false, 'no reasoning with thinking off');
  assert.match(a.meta, new RegExp(`^finish: ${whole.finish_reason} · \\d+ tokens`));
  assert.deepEqual(a.errors, []);

  const second = await send(page, 'And then?');
  assert.deepEqual(second.request.messages, [
    { role: 'user', content: 'Hello there' }, { role: 'assistant', content: a.content },
    { role: 'user', content: 'And then?' }]);
  const b = await second.shown();
  assert.equal(b.content, (await wholeReply(ctx.base, second.request)).message.content);
  assert.equal(await page.locator('.msg').count(), 4);
  await page.done();
});

test('thinking on: the reasoning arrives folded in a <details>', async (ctx) => {
  const page = await openPage(ctx, { apiKey: KEY, seed: '5', maxTokens: '40', thinking: 'true' });
  const sent = await send(page, 'What is a tree?');
  assert.deepEqual(sent.request.chat_template_kwargs, { thinking: true });
  const s = await sent.shown();
  const whole = await wholeReply(ctx.base, sent.request);
  assert.ok(whole.message.reasoning_content.length > 0, 'thinking mode: the reply starts in reasoning');
  assert.equal(s.reasoning, whole.message.reasoning_content);
  assert.equal(s.content, whole.message.content ?? '');
  assert.ok(s.reasoningShown && !s.reasoningOpen, 'the reasoning is there, folded');
  const text = page.locator('.msg.assistant details.reasoning .text');
  assert.equal(await text.isVisible(), false);
  await page.click('.msg.assistant details.reasoning summary');
  assert.equal(await text.isVisible(), true, 'a click unfolds it');
  // The reply joins the conversation with its content (empty when it only reasoned), not its
  // reasoning, which the V3.2 encoder drops at a new user turn anyway.
  const next = await send(page, 'And a flower?');
  assert.deepEqual(next.request.messages.slice(0, 2), [
    { role: 'user', content: 'What is a tree?' },
    { role: 'assistant', content: whole.message.content ?? '' }]);
  await page.done();
});

test('the stop button ends a long generation, and the server is free at once', async (ctx) => {
  const page = await openPage(ctx, { apiKey: KEY, seed: '1', maxTokens: '1900',
                                     extra: '{"ignore_eos": true}' });
  const aborts = await abortCount(ctx.base);
  await send(page, 'Go on and on.', { until: 'first text' });
  // Text shows while the reply is still being written: it streams.
  await page.waitForFunction(() =>
    document.querySelector('.msg.assistant .content').textContent.length > 20);
  assert.equal(await page.isDisabled('#send'), true);
  assert.equal(await page.isEnabled('#stop'), true);
  await page.click('#stop');
  await waitIdle(page, 1);
  const s = await shown(page);
  assert.equal(s.meta, 'stopped');
  assert.ok(s.content.length > 20);
  assert.deepEqual(s.errors, []);
  assert.equal(await page.isEnabled('#send'), true);
  assert.equal(await page.isDisabled('#stop'), true);
  await waitAborted(ctx.base, aborts);
  await page.done();
});

// The server's chunks for a reply with reasoning, content and a tool call, all of it text that
// looks like HTML, as dsa serve frames them (docs/server.md, Replies).
function scriptedStream() {
  const id = 'chatcmpl-scripted';
  const chunk = (delta, extra = {}) => ({ id, object: 'chat.completion.chunk', created: 1,
    model: MODEL, choices: [{ index: 0, delta, finish_reason: null, ...extra }] });
  const events = [
    chunk({ role: 'assistant' }),
    chunk({ reasoning_content: '<script>window.pwned = "reasoning"</script>',
            reasoning: '<script>window.pwned = "reasoning"</script>' }),
    chunk({ content: '<img src=x onerr' }),
    chunk({ content: 'or="window.pwned = \'content\'"><b>bold</b> &amp; done' }),
    chunk({ tool_calls: [{ index: 0, id: 'call_1', type: 'function',
                           function: { name: 'get_weather', arguments: '' } }] }),
    chunk({ tool_calls: [{ index: 0, function: {
      arguments: '{"city": "<svg onload=window.pwned=1>"}' } }] }),
    chunk({}, { finish_reason: 'tool_calls', warnings: ['<i>a warning</i>'] }),
    { id, object: 'chat.completion.chunk', created: 1, model: MODEL, choices: [],
      usage: { prompt_tokens: 5, completion_tokens: 9, total_tokens: 14 } },
  ];
  return events.map((e) => `data: ${JSON.stringify(e)}\n\n`).join('') + 'data: [DONE]\n\n';
}

test('HTML-looking text is shown as text, never parsed (scripted stream)', async (ctx) => {
  const page = await openPage(ctx, { apiKey: KEY });
  await page.route('**/v1/chat/completions', (route) => route.fulfill({
    status: 200, contentType: 'text/event-stream', body: scriptedStream() }));
  const userText = '<b>hi</b> <img src=x onerror="window.pwned = \'user\'">';
  const s = await (await send(page, userText)).shown();
  assert.equal(s.content, '<img src=x onerror="window.pwned = \'content\'"><b>bold</b> &amp; done');
  assert.equal(s.reasoning, '<script>window.pwned = "reasoning"</script>');
  assert.ok(s.reasoningShown && !s.reasoningOpen);
  assert.deepEqual(s.calls, [{ name: 'tool call: get_weather',
                               args: '{\n  "city": "<svg onload=window.pwned=1>"\n}' }]);
  assert.deepEqual(s.warnings, ['warning: <i>a warning</i>']);
  assert.equal(s.meta, 'finish: tool_calls · 9 tokens · ' + s.meta.split(' · ')[2]);
  for (const tag of s.elements) assert.ok(REPLY_TAGS.has(tag), `a <${tag}> in the reply`);
  const user = page.locator('.msg.user .text');
  assert.equal(await user.textContent(), userText);
  assert.equal(await page.locator('.msg.user .text *').count(), 0);
  assert.equal(await page.evaluate(() => window.pwned), undefined, 'no script ran');
  await page.done();
});

test('tool_choice required: the forced call the small model breaks is shown as text',
     async (ctx) => {
  const tools = [{ type: 'function', function: {
    name: 'get_weather', description: 'Weather for a city',
    parameters: { type: 'object', properties: { city: { type: 'string' } },
                  required: ['city'] } } }];
  const page = await openPage(ctx, { apiKey: KEY, seed: '1', maxTokens: '16',
                                     extra: JSON.stringify({ tools, tool_choice: 'required' }) });
  const sent = await send(page, 'Weather in Paris?');
  assert.equal(sent.request.tool_choice, 'required');
  const s = await sent.shown();
  const whole = await wholeReply(ctx.base, sent.request);
  if (whole.message.tool_calls) {  // a model that can finish the call: shown as a call
    assert.deepEqual(s.calls.map((c) => c.name),
                     whole.message.tool_calls.map((c) => `tool call: ${c.function.name}`));
  } else {  // the built-in model: the forced markup comes back as text, with warnings
    assert.ok(s.content.includes('<｜DSML｜invoke name="'), s.content);
    assert.equal(s.content, whole.message.content);
    assert.deepEqual(s.warnings, whole.warnings.map((w) => `warning: ${w}`));
    assert.ok(s.warnings.length > 0);
  }
  for (const tag of s.elements) assert.ok(REPLY_TAGS.has(tag), `a <${tag}> in the reply`);
  await page.done();
});

// --- run ------------------------------------------------------------------------------------

let browser = null;
await runSuite({
  dsa,
  serverArgs: ['--api-key', KEY, '-t', '2', '-c', '2048'],
  tests,
  setup: async () => {
    // As root (CI containers), chromium's sandbox cannot start; the page is our own.
    const args = process.getuid?.() === 0 ? ['--no-sandbox'] : [];
    browser = await chromium.launch({ executablePath: chromiumPath, headless: true, args });
    return { browser };
  },
  teardown: async () => {
    if (browser) await browser.close();
  },
});
