// End-to-end test of `dsa serve` with a second client, the Vercel AI SDK (`ai` and its
// `@ai-sdk/openai-compatible` provider, pinned in scripts/npm), against the real server on
// loopback running the built-in model.
//
//   node tests/server/ai_sdk_e2e.mjs path/to/dsa
//
// The SDK is a client of its own kind: it maps chunks to typed parts (text, reasoning, tool
// calls), fails a stream without a finish reason, enforces tool choices itself, and reads
// usage only when asked to. Each result is compared with the server's whole reply to the very
// request the SDK sent (its request body, replayed unstreamed). The built-in model never writes
// a valid DSML call, so the tool calls the SDK must accept are also fed to it as a scripted
// stream in the server's chunk format (src/server/response_json.cc), through the provider's
// fetch hook. Exits 77 (ctest: skipped) without a built-in model or the packages.
import assert from 'node:assert/strict';

import { abortCount, dsaFromArgs, requirePackage, runSuite, waitAborted }
  from './serve_helper.mjs';

const dsa = dsaFromArgs('ai_sdk_e2e.mjs');
const { streamText, generateText, jsonSchema, tool, APICallError, ToolChoiceViolationError } =
  requirePackage('ai');
const { createOpenAICompatible } = requirePackage('@ai-sdk/openai-compatible');

const KEY = 'sdk-key';
const MODEL = 'dsa-small';

// --- helpers --------------------------------------------------------------------------------

// The provider's options for this server. Its name, "dsa", is also the providerOptions key
// whose unknown fields go into the request body (chat_template_kwargs).
function provider(base, extra = {}) {
  return createOpenAICompatible({ name: 'dsa', baseURL: `${base}/v1`, apiKey: KEY, ...extra });
}

const thinking = { dsa: { chat_template_kwargs: { thinking: true } } };

// The body of a request the SDK sent: generateText keeps it as the JSON text, streamText as
// the object.
const sentBody = (request) =>
  typeof request.body === 'string' ? JSON.parse(request.body) : request.body;

// The server's whole (unstreamed) reply to a request the SDK sent.
async function wholeReply(base, request) {
  const { stream, stream_options, ...body } = sentBody(request);
  const r = await fetch(`${base}/v1/chat/completions`, {
    method: 'POST', body: JSON.stringify(body),
    headers: { 'content-type': 'application/json', authorization: `Bearer ${KEY}` } });
  assert.equal(r.status, 200);
  const reply = await r.json();
  return { ...reply.choices[0], usage: reply.usage };
}

// Drains a streamText result: every part's type, the text and reasoning deltas added up, the
// error parts, and the raw chunks (with includeRawChunks).
async function drain(result) {
  const out = { types: [], text: '', reasoning: '', errors: [], raw: [] };
  for await (const part of result.fullStream) {
    out.types.push(part.type);
    if (part.type === 'text-delta') out.text += part.text;
    if (part.type === 'reasoning-delta') out.reasoning += part.text;
    if (part.type === 'error') out.errors.push(part.error);
    if (part.type === 'raw') out.raw.push(part.rawValue);
  }
  return out;
}

// The AI SDK's finish reasons for the server's.
const FINISH = { stop: 'stop', length: 'length', tool_calls: 'tool-calls' };

function checkUsage(usage, serverUsage) {
  assert.equal(usage.inputTokens, serverUsage.prompt_tokens);
  assert.equal(usage.outputTokens, serverUsage.completion_tokens);
  assert.equal(usage.totalTokens, serverUsage.total_tokens);
  assert.equal(usage.inputTokenDetails.cacheReadTokens, 0, 'cached_tokens is read');
}

const tools = {
  get_weather: tool({
    description: 'Weather for a city',
    inputSchema: jsonSchema({ type: 'object', properties: { city: { type: 'string' } },
                              required: ['city'] }),
  }),
  get_time: tool({
    description: 'Local time in a city',
    inputSchema: jsonSchema({ type: 'object', properties: { city: { type: 'string' } },
                              required: ['city'] }),
  }),
};

// --- the tests ------------------------------------------------------------------------------

const tests = [];
const test = (name, fn) => tests.push({ name, fn });

test('generateText: plain chat, usage, finish reason', async ({ base, model }) => {
  const r = await generateText({ model, prompt: 'Tell me about the sea.', maxOutputTokens: 16,
                                 seed: 7, maxRetries: 0 });
  const sent = sentBody(r.request);
  assert.equal(sent.model, MODEL);
  assert.equal(sent.max_tokens, 16);
  assert.equal(sent.seed, 7);
  const whole = await wholeReply(base, r.request);
  assert.ok(r.text.length > 0);
  assert.equal(r.text, whole.message.content);
  assert.equal(r.reasoningText, undefined, 'no reasoning with thinking off');
  assert.equal(r.finishReason, FINISH[whole.finish_reason]);
  assert.equal(r.rawFinishReason, whole.finish_reason);
  checkUsage(r.usage, whole.usage);
  assert.equal(r.response.modelId, MODEL);
  assert.deepEqual(r.warnings, []);
});

test('streamText: text deltas, include_usage, same text as unstreamed', async ({ base, model }) => {
  const r = streamText({ model, prompt: 'Hello there', maxOutputTokens: 20, seed: 3,
                         maxRetries: 0 });
  const s = await drain(r);
  assert.deepEqual(s.errors, []);
  const sent = sentBody(await r.request);
  assert.equal(sent.stream, true);
  assert.deepEqual(sent.stream_options, { include_usage: true });
  const whole = await wholeReply(base, await r.request);
  assert.equal(s.text, whole.message.content);
  assert.equal(await r.text, s.text);
  assert.ok(s.types.filter((t) => t === 'text-delta').length > 1, 'the text arrives in pieces');
  assert.deepEqual([...new Set(s.types)],
                   ['start', 'start-step', 'text-start', 'text-delta', 'text-end', 'finish-step',
                    'finish']);
  assert.equal(await r.finishReason, FINISH[whole.finish_reason]);
  checkUsage(await r.usage, whole.usage);
});

test('streamText without includeUsage: no stream_options, usage unknown', async ({ base }) => {
  const model = provider(base).chatModel(MODEL);  // the provider's default
  const r = streamText({ model, prompt: 'Hello there', maxOutputTokens: 8, seed: 3,
                         maxRetries: 0 });
  const s = await drain(r);
  assert.deepEqual(s.errors, []);
  assert.equal(sentBody(await r.request).stream_options, undefined);
  assert.equal((await r.usage).outputTokens, undefined);
  assert.ok(['stop', 'length'].includes(await r.finishReason));
});

test('thinking on: reasoning parts, as the provider maps reasoning_content', async ({ base, model }) => {
  const params = { model, prompt: 'What is a tree?', maxOutputTokens: 40, seed: 5, maxRetries: 0 };
  const r = streamText({ ...params, providerOptions: thinking });
  const s = await drain(r);
  assert.deepEqual(s.errors, []);
  const sent = sentBody(await r.request);
  assert.deepEqual(sent.chat_template_kwargs, { thinking: true });
  const whole = await wholeReply(base, await r.request);
  assert.ok(whole.message.reasoning_content.length > 0, 'thinking mode: the reply starts in reasoning');
  assert.ok(s.types.includes('reasoning-start') && s.types.includes('reasoning-end'));
  assert.equal(s.reasoning, whole.message.reasoning_content);
  assert.equal(await r.reasoningText, whole.message.reasoning_content);
  assert.equal(s.text, whole.message.content ?? '');
  // The server does not split completion_tokens into reasoning and text (no
  // completion_tokens_details), so the SDK counts every output token as text.
  checkUsage(await r.usage, whole.usage);

  const g = await generateText({ ...params, providerOptions: thinking });
  assert.deepEqual(g.reasoning.map((p) => [p.type, p.text]),
                   [['reasoning', whole.message.reasoning_content]]);
  assert.equal(g.reasoningText, whole.message.reasoning_content);
  assert.equal(g.text, whole.message.content ?? '');
  // The provider's own reasoningEffort option turns thinking on too (the server reads
  // reasoning_effort: anything but "none").
  const effort = await generateText({ ...params,
                                      providerOptions: { dsa: { reasoningEffort: 'high' } } });
  assert.equal(sentBody(effort.request).reasoning_effort, 'high');
  assert.equal(effort.reasoningText, whole.message.reasoning_content);
  const off = await generateText({ ...params,
                                   providerOptions: { dsa: { reasoningEffort: 'none' } } });
  assert.equal(off.reasoningText, undefined);
});

test('stop sequences', async ({ model }) => {
  const params = { model, prompt: 'Tell a story.', maxOutputTokens: 40, seed: 9, maxRetries: 0 };
  const text = (await generateText(params)).text;
  const from = text.indexOf(' ', Math.floor(text.length / 3));
  assert.ok(from > 0, `reply too short to cut: ${JSON.stringify(text)}`);
  const stop = text.slice(from, from + 4);
  const cut = text.slice(0, text.indexOf(stop));
  for (const stopSequences of [[stop], [stop, 'never-in-this-text']]) {
    const g = await generateText({ ...params, stopSequences });
    assert.deepEqual(sentBody(g.request).stop, stopSequences);
    assert.equal(g.text, cut);
    assert.equal(g.finishReason, 'stop');
    const r = streamText({ ...params, stopSequences });
    const s = await drain(r);
    assert.deepEqual(s.errors, []);
    assert.equal(s.text, cut);
    assert.equal(await r.finishReason, 'stop');
  }
});

// docs/server.md, Tool calls: with a forced choice the prompt ends in the opening of a call;
// the built-in model cannot finish it, so the markup comes back as text with warnings and
// finish_reason "stop" or "length", never as a half call.
test('tools, forced: the SDK takes the server\'s stream and reports the call or the text',
     async ({ base, model }) => {
  for (const toolChoice of ['required', { type: 'tool', toolName: 'get_weather' }]) {
    const params = { model, prompt: 'Weather in Paris?', tools, toolChoice, maxOutputTokens: 16,
                     seed: 1, maxRetries: 0 };
    const r = streamText({ ...params, includeRawChunks: true });
    const s = await drain(r);
    assert.deepEqual(s.errors, [], 'the stream is accepted');
    const sent = sentBody(await r.request);
    assert.deepEqual(sent.tool_choice, toolChoice === 'required' ? 'required'
      : { type: 'function', function: { name: 'get_weather' } });
    assert.deepEqual(sent.tools.map((t) => t.function.name), ['get_weather', 'get_time']);
    const whole = await wholeReply(base, await r.request);
    const calls = await r.toolCalls;
    assert.equal(await r.finishReason, FINISH[whole.finish_reason]);
    if (whole.message.tool_calls) {  // a model that finishes the call
      assert.deepEqual(calls.map((c) => [c.toolName, c.input]),
                       whole.message.tool_calls.map((c) => [c.function.name,
                                                            JSON.parse(c.function.arguments)]));
      const g = await generateText(params);
      assert.equal(g.toolCalls.length, calls.length);
      continue;
    }
    // The text fallback: the markup as text, no call, and the server's warnings in the raw
    // finish chunk (the SDK's own result does not carry them).
    assert.deepEqual(calls, []);
    assert.ok(s.text.startsWith('\n\n<｜DSML｜function_calls>\n<｜DSML｜invoke name="'), s.text);
    assert.equal(s.text, whole.message.content);
    const finishChunk = s.raw.find((c) => c.choices?.[0]?.finish_reason);
    assert.deepEqual(finishChunk.choices[0].warnings, whole.warnings);
    assert.ok(whole.warnings.length > 0);
    // generateText enforces the tool choice itself: no call is its ToolChoiceViolationError,
    // which carries the text the server sent.
    await assert.rejects(generateText(params), (e) => {
      assert.ok(ToolChoiceViolationError.isInstance(e), `${e}`);
      assert.deepEqual(e.content.map((p) => [p.type, p.text]),
                       [['text', whole.message.content]]);
      return true;
    });
  }
  // auto and none: nothing to enforce; whatever the model writes is text.
  for (const toolChoice of ['auto', 'none']) {
    const g = await generateText({ model, prompt: 'Weather in Paris?', tools, toolChoice,
                                   maxOutputTokens: 16, seed: 1, maxRetries: 0 });
    const whole = await wholeReply(base, g.request);
    assert.equal(g.text, whole.message.content ?? '');
    assert.equal(g.toolCalls.length, (whole.message.tool_calls ?? []).length);
  }
});

// A reply with tool calls as the server frames it: the role chunk; per call a first delta with
// index, id, type and name (arguments ""), then one with the whole arguments; the finish chunk
// with "tool_calls"; the usage chunk; [DONE].
function scriptedToolStream(calls) {
  const head = { id: 'chatcmpl-scripted', object: 'chat.completion.chunk', created: 1,
                 model: MODEL };
  const chunk = (delta, finish = null) => ({ ...head,
    choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }] });
  const events = [chunk({ role: 'assistant' })];
  calls.forEach(({ name, args }, index) => {
    events.push(chunk({ tool_calls: [{ index, id: `call_${index}`, type: 'function',
                                       function: { name, arguments: '' } }] }));
    events.push(chunk({ tool_calls: [{ index, function: { arguments: args } }] }));
  });
  events.push(chunk({}, 'tool_calls'));
  events.push({ ...head, choices: [], usage: { prompt_tokens: 30, completion_tokens: 12,
                                               total_tokens: 42,
                                               prompt_tokens_details: { cached_tokens: 0 } } });
  return events.map((e) => `data: ${JSON.stringify(e)}\n\n`).join('') + 'data: [DONE]\n\n';
}

test('tool calls as the server frames them: single and parallel (scripted stream)',
     async ({ base }) => {
  const cases = [
    [{ name: 'get_weather', args: '{"city": "Paris"}' }],
    [{ name: 'get_weather', args: '{"city": "Paris"}' }, { name: 'get_time', args: '{"city": "Oslo"}' }],
  ];
  for (const calls of cases) {
    const fetchScripted = async () => new Response(scriptedToolStream(calls), {
      status: 200, headers: { 'content-type': 'text/event-stream' } });
    const model = provider(base, { includeUsage: true, fetch: fetchScripted }).chatModel(MODEL);
    const r = streamText({ model, prompt: 'Weather in Paris?', tools, toolChoice: 'required',
                           maxRetries: 0 });
    const s = await drain(r);
    assert.deepEqual(s.errors, []);
    const expected = calls.map(({ name, args }, i) => [`call_${i}`, name, JSON.parse(args)]);
    assert.deepEqual((await r.toolCalls).map((c) => [c.toolCallId, c.toolName, c.input]), expected);
    assert.equal(s.types.filter((t) => t === 'tool-call').length, calls.length);
    assert.equal(await r.finishReason, 'tool-calls');
    assert.equal((await r.usage).outputTokens, 12);
    // The stream path of generateText's provider is not used; its whole-reply path reads the
    // same calls from a chat.completion (the server's shape for a whole reply).
    const fetchWhole = async () => Response.json({
      id: 'chatcmpl-scripted', object: 'chat.completion', created: 1, model: MODEL,
      choices: [{ index: 0, finish_reason: 'tool_calls', logprobs: null, message: {
        role: 'assistant', content: null, tool_calls: calls.map(({ name, args }, i) => ({
          id: `call_${i}`, type: 'function', function: { name, arguments: args } })) } }],
      usage: { prompt_tokens: 30, completion_tokens: 12, total_tokens: 42 } });
    const g = await generateText({
      model: provider(base, { fetch: fetchWhole }).chatModel(MODEL), prompt: 'Weather?', tools,
      toolChoice: 'required', maxRetries: 0 });
    assert.deepEqual(g.toolCalls.map((c) => [c.toolCallId, c.toolName, c.input]), expected);
    assert.equal(g.finishReason, 'tool-calls');
  }
});

test('errors arrive as APICallError with the server\'s message and status', async ({ base, model }) => {
  const check = (status, pattern) => (e) => {
    assert.ok(APICallError.isInstance(e), `expected an APICallError, got ${e}`);
    assert.equal(e.statusCode, status);
    assert.match(e.message, pattern);
    assert.equal(e.isRetryable, false);
    return true;
  };
  await assert.rejects(generateText({ model, prompt: 'x', temperature: 5, maxRetries: 0 }),
                       check(400, /temperature/));
  await assert.rejects(
    generateText({ model: provider(base, { apiKey: 'wrong' }).chatModel(MODEL), prompt: 'x',
                   maxRetries: 0 }), check(401, /API key/));
  await assert.rejects(
    generateText({ model: provider(base).chatModel('gpt-4o'), prompt: 'x', maxRetries: 0 }),
    check(404, /does not exist/));
  // In a stream, the same error is an error part, not a throw.
  const r = streamText({ model, prompt: 'x', temperature: 5, maxRetries: 0, onError: () => {} });
  const s = await drain(r);
  assert.equal(s.errors.length, 1);
  check(400, /temperature/)(s.errors[0]);
});

test('aborting a stream frees the server at once', async ({ base, model }) => {
  const aborts = await abortCount(base);
  const controller = new AbortController();
  const r = streamText({ model, prompt: 'Go on and on.', maxOutputTokens: 1900, seed: 1,
                         maxRetries: 0, abortSignal: controller.signal,
                         providerOptions: { dsa: { ignore_eos: true } } });
  let n = 0;
  const types = [];
  for await (const part of r.fullStream) {
    types.push(part.type);
    if (part.type === 'text-delta' && ++n === 4) controller.abort();
  }
  assert.ok(types.includes('abort'), `the stream ends with an abort part: ${types.at(-1)}`);
  await waitAborted(base, aborts);
  const after = await generateText({ model, prompt: 'Hi', maxOutputTokens: 4, maxRetries: 0 });
  assert.equal(after.usage.outputTokens, 4);
});

// --- run ------------------------------------------------------------------------------------

await runSuite({
  dsa,
  serverArgs: ['--api-key', KEY, '-t', '2', '-c', '2048'],
  tests,
  setup: async (base) => ({ model: provider(base, { includeUsage: true }).chatModel(MODEL) }),
});
