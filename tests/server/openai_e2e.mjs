// End-to-end test of `dsa serve` with the official `openai` npm client (scripts/npm, pinned),
// against the real server on loopback running the built-in model: no mock engine.
//
//   node tests/server/openai_e2e.mjs path/to/dsa
//
// The built-in model is small and never writes DSML tool calls on its own, so tool calls are
// checked here for what the server does around them (forced prefixes, text fallback, warnings,
// streams the client's helper accepts); the tool-call delta structure itself is unit-tested with
// scripted text in test_stream_assembler.cc. Exits 77 (ctest: skipped) without node_modules or
// without a built-in model.
import assert from 'node:assert/strict';

import { dsaFromArgs, metric, requirePackage, runSuite } from './serve_helper.mjs';

const dsa = dsaFromArgs('openai_e2e.mjs');
const { OpenAI, APIError } = requirePackage('openai');

const KEY = 'e2e-key';
const MAX_BODY = 65536;
const MODEL = 'dsa-small';

// --- helpers --------------------------------------------------------------------------------

const user = (content) => [{ role: 'user', content }];

// The raw chunks of a streamed request, checked against the rules llama.cpp's server tests
// hold streams to: one id, the role only in the first chunk, no empty content, the finish chunk
// without content, usage (when asked for) in a last chunk of its own.
async function rawStream(client, params) {
  const stream = await client.chat.completions.create({ ...params, stream: true });
  const chunks = [];
  for await (const chunk of stream) chunks.push(chunk);
  assert.ok(chunks.length >= 2, 'a stream has at least the role and the finish chunk');
  const usageLast = params.stream_options?.include_usage === true;
  const body = usageLast ? chunks.slice(0, -1) : chunks;
  let content = '';
  let reasoning = '';
  let finish = null;
  body.forEach((c, i) => {
    assert.equal(c.id, chunks[0].id, 'the id is stable');
    assert.equal(c.object, 'chat.completion.chunk');
    assert.equal(c.model, MODEL);
    assert.equal(c.choices.length, 1);
    const { delta, finish_reason } = c.choices[0];
    assert.equal('role' in delta, i === 0, 'role only in the first chunk');
    if (i === 0) assert.equal(delta.role, 'assistant');
    if ('content' in delta) {
      assert.equal(typeof delta.content, 'string');
      assert.ok(delta.content.length > 0, 'no empty content delta');
      content += delta.content;
    }
    if ('reasoning_content' in delta) {
      assert.ok(delta.reasoning_content.length > 0, 'no empty reasoning delta');
      assert.equal(delta.reasoning, delta.reasoning_content, 'reasoning under both names');
      reasoning += delta.reasoning_content;
    }
    assert.equal(finish_reason !== null, i === body.length - 1, 'finish_reason only at the end');
    if (finish_reason !== null) {
      assert.ok(!('content' in delta), 'the finish chunk has no content');
      finish = finish_reason;
    }
    assert.ok(!('usage' in c) || c.usage == null, 'usage only in its own last chunk');
  });
  let usage = null;
  if (usageLast) {
    const last = chunks.at(-1);
    assert.equal(last.id, chunks[0].id);
    assert.deepEqual(last.choices, [], 'the usage chunk has choices: []');
    usage = last.usage;
    assert.ok(usage, 'the last chunk carries usage');
  }
  return { chunks, content, reasoning, finish, usage };
}

async function expectError(promise, status, check = () => {}) {
  try {
    await promise;
  } catch (e) {
    assert.ok(e instanceof APIError, `expected an APIError, got ${e}`);
    assert.equal(e.status, status, `${e.message}`);
    check(e);
    return e;
  }
  assert.fail(`expected HTTP ${status}, but the request succeeded`);
}

// --- the tests ------------------------------------------------------------------------------

const tests = [];
const test = (name, fn) => tests.push({ name, fn });

test('models', async ({ client }) => {
  const list = await client.models.list();
  assert.deepEqual(list.data.map((m) => m.id), [MODEL]);
});

test('plain chat: shape and usage', async ({ client }) => {
  const r = await client.chat.completions.create({
    model: MODEL, messages: user('Tell me about the sea.'), max_tokens: 16, seed: 7 });
  assert.match(r.id, /^chatcmpl-/);
  assert.equal(r.object, 'chat.completion');
  const m = r.choices[0].message;
  assert.equal(m.role, 'assistant');
  assert.equal(typeof m.content, 'string');
  assert.ok(!('reasoning_content' in m), 'no reasoning with thinking off');
  assert.ok(['stop', 'length'].includes(r.choices[0].finish_reason));
  assert.ok(r.usage.prompt_tokens > 0);
  assert.ok(r.usage.completion_tokens > 0 && r.usage.completion_tokens <= 16);
  assert.equal(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens);
});

test('same seed, same text; other seeds differ', async ({ client }) => {
  const ask = (seed) => client.chat.completions.create({
    model: MODEL, messages: user('Write about rivers.'), max_tokens: 24, seed, temperature: 1 })
    .then((r) => r.choices[0].message.content);
  const a = await ask(11);
  assert.equal(await ask(11), a);
  const others = [await ask(12), await ask(13), await ask(14)];
  assert.ok(others.some((t) => t !== a), 'three other seeds all gave the same text');
});

test('stream: structure, include_usage last, same text as unstreamed', async ({ client }) => {
  const params = { model: MODEL, messages: user('Hello there'), max_tokens: 20, seed: 3 };
  const whole = await client.chat.completions.create(params);
  const s = await rawStream(client, { ...params, stream_options: { include_usage: true } });
  assert.equal(s.content, whole.choices[0].message.content);
  assert.equal(s.finish, whole.choices[0].finish_reason);
  assert.deepEqual(s.usage, whole.usage);
  const plain = await rawStream(client, params);  // without include_usage: no usage chunk
  assert.ok(plain.chunks.every((c) => c.choices.length === 1));
});

test('thinking on and off', async ({ client }) => {
  const params = { model: MODEL, messages: user('What is a tree?'), max_tokens: 16, seed: 5 };
  const on = await client.chat.completions.create({ ...params,
                                                    chat_template_kwargs: { thinking: true } });
  const m = on.choices[0].message;
  assert.equal(typeof m.reasoning_content, 'string');
  assert.ok(m.reasoning_content.length > 0, 'thinking mode: the reply starts in reasoning');
  assert.equal(m.reasoning, m.reasoning_content);
  const streamed = await rawStream(client, { ...params, chat_template_kwargs: { thinking: true } });
  assert.equal(streamed.reasoning, m.reasoning_content);
  assert.equal(streamed.content, m.content ?? '');

  const effort = await client.chat.completions.create({ ...params, reasoning_effort: 'high' });
  assert.equal(effort.choices[0].message.reasoning_content, m.reasoning_content);
  for (const off of [{}, { chat_template_kwargs: { thinking: false } },
                     { reasoning_effort: 'none' }]) {
    const r = await client.chat.completions.create({ ...params, ...off });
    assert.ok(!('reasoning_content' in r.choices[0].message), JSON.stringify(off));
    const rs = await rawStream(client, { ...params, ...off });
    assert.equal(rs.reasoning, '');
  }
});

test('stop strings', async ({ client }) => {
  const params = { model: MODEL, messages: user('Tell a story.'), max_tokens: 40, seed: 9 };
  const text = (await client.chat.completions.create(params)).choices[0].message.content;
  // A stop string that the reply contains, from its middle.
  const from = text.indexOf(' ', Math.floor(text.length / 3));
  assert.ok(from > 0, `reply too short to cut: ${JSON.stringify(text)}`);
  const stop = text.slice(from, from + 4);
  const cut = text.slice(0, text.indexOf(stop));
  for (const s of [stop, [stop, 'never-in-this-text']]) {
    const r = await client.chat.completions.create({ ...params, stop: s });
    assert.equal(r.choices[0].message.content, cut);
    assert.equal(r.choices[0].finish_reason, 'stop');
    const st = await rawStream(client, { ...params, stop: s });
    assert.equal(st.content, cut);
    assert.equal(st.finish, 'stop');
  }
});

test('the .stream() helper accepts the streams', async ({ client }) => {
  for (const extra of [{}, { chat_template_kwargs: { thinking: true } },
                       { stream_options: { include_usage: true } }]) {
    const params = { model: MODEL, messages: user('Hi'), max_tokens: 12, seed: 2, ...extra };
    const { stream_options, ...unstreamed } = params;
    const whole = await client.chat.completions.create(unstreamed);
    const runner = client.chat.completions.stream(params);
    for await (const _ of runner) { /* drain */ }
    const final = await runner.finalChatCompletion();
    assert.equal(final.choices[0].message.content ?? '', whole.choices[0].message.content ?? '');
    assert.equal(final.choices[0].finish_reason, whole.choices[0].finish_reason);
  }
});

test('tools: prompts accepted, required call forced, broken call returned as text',
     async ({ client }) => {
  const tools = [{ type: 'function', function: {
    name: 'get_weather', description: 'Weather for a city',
    parameters: { type: 'object', properties: { city: { type: 'string' } },
                  required: ['city'] } } }];
  const base = { model: MODEL, messages: user('Weather in Paris?'), tools, max_tokens: 16,
                 seed: 1 };
  for (const tool_choice of ['auto', 'none', 'required',
                             { type: 'function', function: { name: 'get_weather' } }]) {
    const r = await client.chat.completions.create({ ...base, tool_choice });
    const choice = r.choices[0];
    // Any call that came back must be whole: a name and arguments that parse.
    for (const call of choice.message.tool_calls ?? []) {
      assert.equal(call.type, 'function');
      assert.equal(call.function.name, 'get_weather');
      JSON.parse(call.function.arguments);
    }
    if (tool_choice !== 'auto' && tool_choice !== 'none' && !choice.message.tool_calls) {
      // The small model cannot finish the call it was forced to begin: its markup comes back
      // as text, flagged, and never as an empty call.
      assert.ok(choice.message.content.includes('<｜DSML｜invoke name="'), choice.message.content);
      assert.ok(Array.isArray(choice.warnings) && choice.warnings.length > 0);
    }
    if (tool_choice === 'required') {  // the helper on a stream with a forced, broken call
      const runner = client.chat.completions.stream({ ...base, tool_choice });
      for await (const _ of runner) { /* drain */ }
      const final = await runner.finalChatCompletion();
      assert.equal(final.choices[0].message.content, choice.message.content);
    }
  }
  await expectError(client.chat.completions.create({ ...base, tools: [{ type: 'function',
    function: { name: 'bad name' } }] }), 400, (e) => assert.equal(e.param, 'tools[0].function.name'));
  await expectError(client.chat.completions.create({ ...base, tool_choice: { type: 'function',
    function: { name: 'missing' } } }), 400, (e) => assert.equal(e.param, 'tool_choice'));
});

test('completions endpoint', async ({ client }) => {
  const r = await client.completions.create({ model: MODEL, prompt: 'Once upon a time',
                                              max_tokens: 8, seed: 4 });
  assert.equal(r.object, 'text_completion');
  assert.equal(typeof r.choices[0].text, 'string');
  assert.equal(r.usage.completion_tokens, 8);
  const stream = await client.completions.create({ model: MODEL, prompt: 'Once upon a time',
                                                   max_tokens: 8, seed: 4, stream: true });
  let text = '';
  for await (const c of stream) text += c.choices[0]?.text ?? '';
  assert.equal(text, r.choices[0].text);
});

test('errors: 400, 401, 404, 413 in OpenAI\'s shape', async ({ client, base }) => {
  const msg = user('x');
  await expectError(client.chat.completions.create({ model: MODEL, messages: msg,
                                                     temperature: 'hot' }), 400,
                    (e) => { assert.equal(e.param, 'temperature'); assert.equal(e.type, 'invalid_request_error'); });
  await expectError(client.chat.completions.create({ model: MODEL, messages: msg, n: 2 }), 400,
                    (e) => assert.equal(e.param, 'n'));
  await expectError(client.chat.completions.create({ model: MODEL, messages: msg,
                                                     logprobs: true }), 400);
  await expectError(client.chat.completions.create({ model: MODEL, messages: [] }), 400);
  const long = 'word '.repeat(3000);  // beyond -c 2048
  await expectError(client.chat.completions.create({ model: MODEL, messages: user(long) }), 400,
                    (e) => assert.equal(e.code, 'context_length_exceeded'));
  const stranger = new OpenAI({ baseURL: `${base}/v1`, apiKey: 'wrong', maxRetries: 0 });
  await expectError(stranger.models.list(), 401, (e) => assert.equal(e.code, 'invalid_api_key'));
  await expectError(client.chat.completions.create({ model: 'gpt-4o', messages: msg }), 404,
                    (e) => assert.equal(e.code, 'model_not_found'));
  await expectError(client.chat.completions.create({ model: MODEL,
                                                     messages: user('x'.repeat(MAX_BODY)) }), 413);
  // The same shapes reach plain HTTP clients; malformed JSON and bad UTF-8 too.
  const post = (body, type = 'application/json') => fetch(`${base}/v1/chat/completions`, {
    method: 'POST', headers: { authorization: `Bearer ${KEY}`, 'content-type': type }, body });
  for (const [body, status] of [['{"messages": [', 400],
                                [Buffer.from('{"messages": [{"role": "user", "content": "\xff"}]}', 'latin1'), 400]]) {
    const r = await post(body);
    assert.equal(r.status, status);
    const j = await r.json();
    assert.equal(typeof j.error.message, 'string');
    assert.equal(j.error.type, 'invalid_request_error');
  }
  const route = await fetch(`${base}/v1/nowhere`, { headers: { authorization: `Bearer ${KEY}` } });
  assert.equal(route.status, 404);
  assert.equal((await route.json()).error.code, 'unknown_url');
});

test('a client that leaves mid-stream frees the server at once', async ({ client, base }) => {
  const aborts = (await metric(base, 'dsa:request_success_total{finished_reason="abort"}')) ?? 0;
  const controller = new AbortController();
  const stream = await client.chat.completions.create(
    { model: MODEL, messages: user('Go on and on.'), max_tokens: 1900, ignore_eos: true,
      seed: 1, stream: true }, { signal: controller.signal });
  let n = 0;
  try {
    for await (const _ of stream) if (++n === 4) controller.abort();
  } catch (e) {
    assert.ok(e.name === 'APIUserAbortError' || e.name === 'AbortError', `${e}`);
  }
  const deadline = Date.now() + 5000;
  while ((await metric(base, 'dsa:num_requests_running')) !== 0 ||
         ((await metric(base, 'dsa:request_success_total{finished_reason="abort"}')) ?? 0) === aborts) {
    assert.ok(Date.now() < deadline, 'the cancelled request still runs after 5 s');
    await new Promise((res) => setTimeout(res, 20));
  }
  const after = await client.chat.completions.create({ model: MODEL, messages: user('Hi'),
                                                       max_tokens: 4 });
  assert.equal(after.choices[0].message.role, 'assistant');
});

test('health and metrics', async ({ base }) => {
  const h = await fetch(`${base}/health`);
  assert.equal(h.status, 200);
  for (const name of ['dsa:num_requests_running', 'dsa:num_requests_waiting',
                      'dsa:prompt_tokens_total', 'dsa:generation_tokens_total',
                      'dsa:time_to_first_token_seconds_count',
                      'dsa:inter_token_latency_seconds_count']) {
    const v = await metric(base, name);
    assert.ok(v !== undefined, `${name} missing`);
  }
  assert.ok((await metric(base, 'dsa:generation_tokens_total')) > 0);
  assert.ok((await metric(base, 'dsa:time_to_first_token_seconds_count')) > 0);
});

// --- run ------------------------------------------------------------------------------------

await runSuite({
  dsa,
  serverArgs: ['--api-key', KEY, '-t', '2', '-c', '2048', '--max-body', String(MAX_BODY)],
  tests,
  setup: async (base) => ({
    client: new OpenAI({ baseURL: `${base}/v1`, apiKey: KEY, maxRetries: 0, timeout: 30000 }),
  }),
});
