// Load test of `dsa serve` on loopback with the built-in model, Node 20's fetch and no npm
// packages: a wave of 64 concurrent streams through --parallel 8 slots and a queue of 64, then
// 16 streams aborted mid-way among 16 more that run to the end, while /health is polled every
// 100 ms. Every stream must arrive whole and well formed, the aborts must free their slots, and
// the server must answer /health promptly throughout.
//
//   node tests/server/load_e2e.mjs path/to/dsa
//
// Bounded: every request and every wait has a deadline, and all of them end by LIMIT_MS, so a
// hung server fails the test instead of hanging it. Exits 77 (ctest: skipped) without a built-in
// model.
import assert from 'node:assert/strict';

import { dsaFromArgs, runSuite } from './serve_helper.mjs';

const dsa = dsaFromArgs('load_e2e.mjs');

const PARALLEL = 8;
const QUEUE = 64;
const WAVE = 64;            // parallel + queue holds it, so none may get 429
const ABORTED = 16;
const FINISHED_BESIDE = 16;  // run to the end in the same wave as the aborted ones
const MAX_TOKENS = 24;
const ABORT_MAX_TOKENS = 400;  // far more than the deltas read before the abort
const ABORT_AFTER = 3;         // content deltas read before aborting
// The whole load must end within this (ctest's TIMEOUT is set well above it): 10 s, about 5x
// what it takes in the release build on 2 cores; tests/CMakeLists.txt sets more for sanitizers.
const LIMIT_MS = 1000 * Number(process.env.DSA_LOAD_LIMIT_S ?? 10);
const HEALTH_PERIOD_MS = 100;
const HEALTH_LIMIT_MS = 3000;  // one /health answer slower than this fails the test
const MODEL = 'dsa-small';

const ABORT_NAME = 'dsa:request_success_total{finished_reason="abort"}';
const LENGTH_NAME = 'dsa:request_success_total{finished_reason="length"}';
const ERROR_NAME = 'dsa:request_success_total{finished_reason="error"}';

// Every fetch also ends at the test's overall deadline (set when the server is up).
let overall = null;
const signal = (ms) => AbortSignal.any([overall, AbortSignal.timeout(ms)]);
const sleep = (ms) => new Promise((res) => setTimeout(res, ms));

const WORDS = ('river harbor lantern meadow orchard glacier canyon market bridge forest island ' +
               'desert village garden mountain tower').split(' ');

// Short prompts, all distinct, with distinct seeds.
function chatBody(i, maxTokens) {
  return {
    model: MODEL,
    messages: [{ role: 'user', content: `Tale ${i}: the ${WORDS[i % WORDS.length]} at dawn.` }],
    max_tokens: maxTokens, seed: 1000 + i, ignore_eos: true,
    stream: true, stream_options: { include_usage: true },
  };
}

// All of /metrics at once (serve_helper's metric() reads one value, without a deadline):
// name (with its labels) -> value.
async function metrics(base) {
  const r = await fetch(`${base}/metrics`, { signal: signal(5000) });
  assert.equal(r.status, 200);
  const values = new Map();
  for (const line of (await r.text()).split('\n')) {
    if (line && !line.startsWith('#')) values.set(line.slice(0, line.lastIndexOf(' ')),
                                                  Number(line.split(' ').at(-1)));
  }
  return values;
}

// --- reading a stream -----------------------------------------------------------------------

// POSTs a streamed chat request and reads its SSE events raw. With `abortAfter`, aborts the
// fetch once that many content deltas arrived and returns what was read; otherwise the stream
// must end with `data: [DONE]` and nothing after it, so that a cut stream cannot pass.
async function streamChat(base, body, { abortAfter = 0, ms = LIMIT_MS } = {}) {
  const controller = new AbortController();
  const start = performance.now();
  const r = await fetch(`${base}/v1/chat/completions`, {
    method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body),
    signal: AbortSignal.any([controller.signal, signal(ms)]) });
  assert.equal(r.status, 200, `HTTP ${r.status}: ${r.status === 200 ? '' : await r.text()}`);
  assert.match(r.headers.get('content-type'), /^text\/event-stream/);
  const headersMs = performance.now() - start;
  const decoder = new TextDecoder();
  const chunks = [];
  let buffer = '';
  let done = false;
  let deltas = 0;
  const reader = r.body.getReader();
  for (;;) {
    let piece;
    try {
      piece = await reader.read();
    } catch (e) {
      if (controller.signal.aborted) return { chunks, deltas, aborted: true, headersMs };
      throw e;
    }
    if (piece.done) break;
    buffer += decoder.decode(piece.value, { stream: true });
    let end;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      assert.ok(!done, `an event after [DONE]: ${JSON.stringify(event)}`);
      assert.ok(event.startsWith('data: ') && !event.includes('\n'),
                `an SSE event is one "data: " line: ${JSON.stringify(event)}`);
      const data = event.slice(6);
      if (data === '[DONE]') {
        done = true;
        continue;
      }
      let chunk;
      try {
        chunk = JSON.parse(data);
      } catch {
        assert.fail(`an event that is not JSON: ${JSON.stringify(data)}`);
      }
      assert.ok(!('error' in chunk), `an error chunk: ${data}`);
      chunks.push(chunk);
      if (typeof chunk.choices?.[0]?.delta?.content === 'string') deltas++;
      if (abortAfter && deltas === abortAfter) {
        controller.abort();
        return { chunks, deltas, aborted: true, headersMs };
      }
    }
  }
  assert.ok(!abortAfter, `the stream ended after ${deltas} deltas, before the abort`);
  assert.equal(buffer + decoder.decode(), '', 'nothing after the last event');
  assert.ok(done, 'the stream ends with data: [DONE]');
  return { chunks, deltas, aborted: false, headersMs };
}

// The rules openai_e2e.mjs holds streams to: one id, the role only (and alone) in the first
// chunk, content deltas never empty, finish_reason only in the finish chunk (without content),
// and usage in a last chunk of its own with every token asked for.
function checkComplete({ chunks, headersMs }, maxTokens) {
  assert.ok(chunks.length >= 4, `role, content, finish and usage chunks; got ${chunks.length}`);
  const id = chunks[0].id;
  assert.match(id, /^chatcmpl-/);
  const body = chunks.slice(0, -1);
  let content = '';
  body.forEach((c, i) => {
    assert.equal(c.id, id, 'the id is stable across the stream');
    assert.equal(c.object, 'chat.completion.chunk');
    assert.equal(c.model, MODEL);
    assert.equal(c.choices.length, 1);
    const { delta, finish_reason } = c.choices[0];
    assert.equal('role' in delta, i === 0, 'the role only in the first chunk');
    if (i === 0) assert.deepEqual(delta, { role: 'assistant' });
    if ('content' in delta) {
      assert.equal(typeof delta.content, 'string');
      assert.ok(delta.content.length > 0, 'no empty content delta');
      content += delta.content;
    }
    assert.ok(!('reasoning_content' in delta), 'no reasoning with thinking off');
    assert.equal(finish_reason !== null, i === body.length - 1, 'finish_reason only at the end');
    assert.ok(!('usage' in c) || c.usage == null, 'usage only in its own last chunk');
  });
  const finish = body.at(-1).choices[0];
  assert.equal(finish.finish_reason, 'length');
  assert.deepEqual(finish.delta, {}, 'the finish chunk carries no delta');
  const last = chunks.at(-1);
  assert.equal(last.id, id);
  assert.deepEqual(last.choices, [], 'the usage chunk has choices: []');
  const { usage } = last;
  assert.ok(usage, 'the last chunk carries usage');
  assert.equal(usage.completion_tokens, maxTokens, 'every token asked for (ignore_eos)');
  assert.ok(usage.prompt_tokens > 0);
  assert.equal(usage.total_tokens, usage.prompt_tokens + usage.completion_tokens);
  assert.ok(content.length > 0, 'some text arrived');
  return { id, content, tokens: usage.completion_tokens, headersMs };
}

// Waits for a list of promises, each of which must resolve; reports how many failed and the
// first failure, rather than only the first.
async function all(promises, what) {
  const results = await Promise.allSettled(promises);
  const failed = results.filter((r) => r.status === 'rejected');
  if (failed.length) {
    throw new Error(`${failed.length} of ${results.length} ${what} failed; the first: ` +
                    `${failed[0].reason?.stack ?? failed[0].reason}`);
  }
  return results.map((r) => r.value);
}

// --- /health during the load ----------------------------------------------------------------

// Polls /health one request at a time, every HEALTH_PERIOD_MS, until stopped; every answer must
// be 200 within HEALTH_LIMIT_MS.
function pollHealth(base) {
  const state = { polls: 0, maxMs: 0, failures: [], stopped: false };
  state.done = (async () => {
    while (!state.stopped && !overall.aborted) {
      const start = performance.now();
      try {
        const r = await fetch(`${base}/health`, { signal: AbortSignal.timeout(HEALTH_LIMIT_MS) });
        await r.text();
        if (r.status !== 200) state.failures.push(`HTTP ${r.status}`);
      } catch (e) {
        state.failures.push(`${e.name}: ${e.message}`);
      }
      const ms = performance.now() - start;
      state.polls++;
      state.maxMs = Math.max(state.maxMs, ms);
      if (ms > HEALTH_LIMIT_MS) state.failures.push(`an answer took ${ms.toFixed(0)} ms`);
      await sleep(Math.max(0, HEALTH_PERIOD_MS - ms));
    }
  })();
  return state;
}

// --- the tests ------------------------------------------------------------------------------

const tests = [];
const test = (name, fn) => tests.push({ name, fn });
const stats = { started: 0, tokens: 0, loadMs: 0, ids: new Set() };

test(`${WAVE} concurrent streams all arrive whole`, async ({ base, health }) => {
  const before = await metrics(base);
  const polls = health.polls;
  const start = performance.now();
  const results = await all(
    Array.from({ length: WAVE }, (_, i) => streamChat(base, chatBody(i, MAX_TOKENS))
      .then((s) => checkComplete(s, MAX_TOKENS))), 'streams');
  const ms = performance.now() - start;
  const tokens = results.reduce((n, r) => n + r.tokens, 0);
  stats.tokens += tokens;
  stats.loadMs += ms;
  for (const r of results) stats.ids.add(r.id);
  assert.equal(stats.ids.size, WAVE, 'every stream has its own id');
  // Distinct seeds and prompts: the texts are not all one.
  assert.ok(new Set(results.map((r) => r.content)).size > 1, 'all the streams wrote the same text');
  const after = await metrics(base);
  const grew = (name) => (after.get(name) ?? 0) - (before.get(name) ?? 0);
  assert.equal(grew('dsa:num_requests_rejected_total'), 0, 'none got 429');
  assert.equal(grew(LENGTH_NAME), WAVE);
  assert.equal(grew(ERROR_NAME), 0, 'no request failed');
  assert.equal(grew(ABORT_NAME), 0, 'no request was cancelled');
  assert.ok(health.polls > polls, '/health was answered while the streams ran');
  // The role chunk goes out at once, even from the queue: the headers' delay is the server's
  // accepting and parsing (a listen backlog too short for the burst made it 1 s).
  const headersMs = Math.max(...results.map((r) => r.headersMs));
  console.log(`     ${WAVE} streams, ${tokens} tokens in ${(ms / 1000).toFixed(2)} s: ` +
              `${(tokens / ms * 1000).toFixed(1)} tokens/s; headers within ` +
              `${headersMs.toFixed(0)} ms`);
});

test(`${ABORTED} streams aborted mid-way among ${FINISHED_BESIDE} that finish`, async ({ base }) => {
  const before = await metrics(base);
  const start = performance.now();
  // Interleaved, so that aborts free slots that waiting streams then take, while others run.
  const streams = [];
  for (let i = 0; i < ABORTED + FINISHED_BESIDE; i++) {
    const n = WAVE + i;
    streams.push(i % 2 === 0
      ? streamChat(base, chatBody(n, ABORT_MAX_TOKENS), { abortAfter: ABORT_AFTER })
        .then((s) => {
          assert.ok(s.aborted && s.deltas === ABORT_AFTER);
          assert.deepEqual(s.chunks[0].choices[0].delta, { role: 'assistant' });
          assert.ok(s.chunks.every((c) => c.id === s.chunks[0].id), 'the id is stable');
          return null;
        })
      : streamChat(base, chatBody(n, MAX_TOKENS)).then((s) => checkComplete(s, MAX_TOKENS)));
  }
  const finished = (await all(streams, 'streams')).filter((r) => r);
  const ms = performance.now() - start;
  assert.equal(finished.length, FINISHED_BESIDE);
  const tokens = finished.reduce((n, r) => n + r.tokens, 0);
  stats.tokens += tokens;
  stats.loadMs += ms;
  for (const r of finished) stats.ids.add(r.id);
  assert.equal(stats.ids.size, WAVE + FINISHED_BESIDE, 'every stream has its own id');

  // The aborted jobs end before the server's next step; allow for the writes that notice it.
  const freeAt = performance.now();
  let after;
  let grew;
  for (;;) {
    after = await metrics(base);
    grew = (name) => (after.get(name) ?? 0) - (before.get(name) ?? 0);
    const running = after.get('dsa:num_requests_running');
    const waiting = after.get('dsa:num_requests_waiting');
    const cached = after.get('dsa:kv_cache_tokens');
    if (running === 0 && waiting === 0 && cached === 0 && grew(ABORT_NAME) >= ABORTED) break;
    assert.ok(performance.now() - freeAt < 10000, `10 s after the aborts: running ${running}, ` +
              `waiting ${waiting}, kv_cache_tokens ${cached}, aborts ${grew(ABORT_NAME)}`);
    await sleep(50);
  }
  console.log(`     free ${(performance.now() - freeAt).toFixed(0)} ms after the last stream; ` +
              `${grew(ABORT_NAME)} aborts counted`);
  assert.equal(grew(LENGTH_NAME), FINISHED_BESIDE);
  assert.equal(grew(ERROR_NAME), 0, 'no request failed');
  assert.equal(grew('dsa:num_requests_rejected_total'), 0, 'none got 429');
  // The aborted ones count the tokens they made before they stopped, at least those read.
  const generated = grew('dsa:generation_tokens_total');
  assert.ok(generated >= tokens + ABORTED * ABORT_AFTER, `generation_tokens_total +${generated}`);
  // Stopped mid-way: far fewer than they asked for.
  assert.ok(generated - tokens < ABORTED * ABORT_MAX_TOKENS / 2,
            `the aborted streams generated ${generated - tokens} tokens: they ran on`);
  console.log(`     the aborted streams generated ${generated - tokens} tokens ` +
              `(${ABORTED * ABORT_AFTER} read, ${ABORTED * ABORT_MAX_TOKENS} asked for)`);
});

test('a request after the aborts is served normally', async ({ base }) => {
  const start = performance.now();
  const r = checkComplete(await streamChat(base, chatBody(999, MAX_TOKENS), { ms: 15000 }),
                          MAX_TOKENS);
  assert.ok(!stats.ids.has(r.id));
  console.log(`     served in ${(performance.now() - start).toFixed(0)} ms`);
  const after = await metrics(base);
  assert.equal(after.get('dsa:num_requests_running'), 0);
  assert.equal(after.get('dsa:kv_cache_tokens'), 0);
});

test('/health answered 200 promptly throughout', async ({ health }) => {
  health.stopped = true;
  await health.done;
  assert.deepEqual(health.failures, []);
  const s = (performance.now() - stats.started) / 1000;
  console.log(`     load ${s.toFixed(2)} s (the two waves ${(stats.loadMs / 1000).toFixed(2)} s), ` +
              `${(stats.tokens / stats.loadMs * 1000).toFixed(1)} output tokens/s over the waves, ` +
              `/health max ${health.maxMs.toFixed(1)} ms over ${health.polls} polls`);
});

let health = null;
await runSuite({
  dsa,
  serverArgs: ['-t', '2', '-c', '2048', '--parallel', String(PARALLEL), '--queue', String(QUEUE)],
  tests,
  setup: async (base) => {
    overall = AbortSignal.timeout(LIMIT_MS);
    stats.started = performance.now();
    health = pollHealth(base);
    return { health };
  },
  // A failed test leaves the poller running; it must end before the server stops.
  teardown: async () => {
    if (!health) return;
    health.stopped = true;
    await health.done;
  },
});
