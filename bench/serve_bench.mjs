// Serving benchmark for `dsa serve`, in the spirit of vLLM's benchmark_serving: at each
// concurrency, a fixed number of streamed chat requests, each client sending its next request
// as soon as its last one ends, and per request the time to first token (TTFT), the time per
// output token after the first (TPOT) and every inter-token latency (ITL).
//
//   node bench/serve_bench.mjs --dsa build/release/dsa [--model DIR] [--concurrency 1,4,16,32]
//        [--requests N] [--prompt-words W] [--max-tokens N] [--parallel P] [-t N]
//        [--shared-prefix WORDS [--no-prefix-cache]] [--json FILE]
//   node bench/serve_bench.mjs --url http://127.0.0.1:8080 ...   (a server already running)
//
// With --dsa the script starts the server itself (--parallel defaults to the largest
// concurrency). Requests use ignore_eos and a fixed max_tokens, so every one generates the same
// number of tokens; output tokens are counted from the usage chunk (stream_options.include_usage).
// No npm packages: Node 20's fetch reads the SSE stream.
//
// --shared-prefix WORDS measures prefix reuse instead: every request starts with the same long
// system prompt of WORDS words followed by a different short question, at concurrency 1, and
// the report gives TTFT of the first (cold) request and of the later ones.
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

const { values: opt } = parseArgs({
  options: {
    dsa: { type: 'string' },
    url: { type: 'string' },
    model: { type: 'string' },
    concurrency: { type: 'string', default: '1,4,16,32' },
    requests: { type: 'string' },
    'prompt-words': { type: 'string', default: '64' },
    'max-tokens': { type: 'string', default: '64' },
    parallel: { type: 'string' },
    threads: { type: 'string', short: 't' },
    context: { type: 'string', short: 'c', default: '2048' },
    'shared-prefix': { type: 'string' },
    'no-prefix-cache': { type: 'boolean', default: false },
    json: { type: 'string' },
  },
});

const levels = opt.concurrency.split(',').map(Number);
if (levels.some((c) => !(c >= 1))) throw new Error(`bad --concurrency ${opt.concurrency}`);
const maxTokens = Number(opt['max-tokens']);
const promptWords = Number(opt['prompt-words']);

const WORDS = ('the river runs past the old mill where the miller keeps his books and the ' +
               'children count the boats that carry grain down to the sea each morning').split(' ');
function text(words, salt) {
  const out = [];
  for (let i = 0; i < words; ++i) out.push(WORDS[(i * 7 + salt * 13) % WORDS.length]);
  return out.join(' ');
}

async function startServer() {
  const parallel = opt.parallel ?? String(Math.max(...levels));
  const args = ['serve', '--port', '0', '-c', opt.context, '--parallel', parallel,
                '--queue', '256'];
  if (opt.model) args.push('-m', opt.model);
  if (opt.threads) args.push('-t', opt.threads);
  if (opt['no-prefix-cache']) args.push('--no-prefix-cache');
  const child = spawn(opt.dsa, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  const url = await new Promise((resolve, reject) => {
    child.stderr.on('data', (d) => {
      log += d;
      const m = log.match(/listening on (http:\/\/[^ ]+)/);
      if (m) resolve(m[1]);
    });
    child.on('exit', (code) => reject(new Error(`dsa serve exited with ${code}:\n${log}`)));
  });
  for (let i = 0; i < 600; ++i) {  // /health is 503 while the model loads
    const r = await fetch(`${url}/health`).catch(() => null);
    if (r?.status === 200) return { url, child };
    await new Promise((r2) => setTimeout(r2, 100));
  }
  throw new Error(`the server did not become ready:\n${log}`);
}

// One streamed request: [arrival of each content or reasoning delta] and the usage.
async function request(url, messages) {
  const start = performance.now();
  const r = await fetch(`${url}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ messages, max_tokens: maxTokens, ignore_eos: true, stream: true,
                           stream_options: { include_usage: true }, temperature: 0 }),
  });
  if (r.status !== 200) throw new Error(`HTTP ${r.status}: ${await r.text()}`);
  const times = [];
  let usage = null;
  let buffer = '';
  const decoder = new TextDecoder();
  for await (const piece of r.body) {
    buffer += decoder.decode(piece, { stream: true });
    let end;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      if (!event.startsWith('data: ') || event === 'data: [DONE]') continue;
      const chunk = JSON.parse(event.slice(6));
      if (chunk.error) throw new Error(chunk.error.message);
      if (chunk.usage) usage = chunk.usage;
      const delta = chunk.choices?.[0]?.delta;
      if (delta && (delta.content || delta.reasoning_content)) times.push(performance.now());
    }
  }
  const end = performance.now();
  if (!usage) throw new Error('no usage chunk');
  return { start, end, times, tokens: usage.completion_tokens, prompt: usage.prompt_tokens,
           cached: usage.prompt_tokens_details?.cached_tokens ?? 0 };
}

function quantile(values, q) {
  if (values.length === 0) return NaN;
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * (s.length - 1) + 0.5))];
}

async function runLevel(url, concurrency, count) {
  let next = 0;
  const results = [];
  const t0 = performance.now();
  const client = async () => {
    while (next < count) {
      const i = next++;
      results.push(await request(url, [{ role: 'user', content: text(promptWords, i) }]));
    }
  };
  await Promise.all(Array.from({ length: concurrency }, client));
  const seconds = (performance.now() - t0) / 1000;
  const ttft = results.map((r) => r.times[0] - r.start);
  const tpot = results.map((r) => (r.end - r.times[0]) / Math.max(1, r.tokens - 1));
  const itl = results.flatMap((r) => r.times.slice(1).map((t, k) => t - r.times[k]));
  const tokens = results.reduce((s, r) => s + r.tokens, 0);
  return {
    concurrency, requests: count, seconds,
    request_throughput: count / seconds,
    output_tokens_per_second: tokens / seconds,
    ttft_ms: { median: quantile(ttft, 0.5), p99: quantile(ttft, 0.99) },
    tpot_ms: { median: quantile(tpot, 0.5), p99: quantile(tpot, 0.99) },
    itl_ms: { median: quantile(itl, 0.5), p99: quantile(itl, 0.99) },
  };
}

async function runSharedPrefix(url, words) {
  const system = text(words, 1);
  const ttft = [];
  let last = null;
  for (let i = 0; i < 6; ++i) {
    const r = await request(url, [{ role: 'system', content: system },
                                  { role: 'user', content: `question ${i}: ${text(8, i + 5)}` }]);
    ttft.push(r.times[0] - r.start);
    last = r;
  }
  return { shared_prefix_words: words, prompt_tokens: last.prompt, cached_tokens: last.cached,
           ttft_first_ms: ttft[0], ttft_later_median_ms: quantile(ttft.slice(1), 0.5) };
}

const f = (x, digits = 1) => x.toFixed(digits);
const server = opt.url ? { url: opt.url, child: null } : await startServer();
const report = { max_tokens: maxTokens, prompt_words: promptWords, levels: [] };
try {
  await request(server.url, [{ role: 'user', content: 'warm up' }]);
  if (opt['shared-prefix']) {
    report.shared_prefix = await runSharedPrefix(server.url, Number(opt['shared-prefix']));
    const s = report.shared_prefix;
    console.log(`shared prefix of ${s.shared_prefix_words} words (prompts of ${s.prompt_tokens} ` +
                `tokens, ${s.cached_tokens} cached in the last): TTFT first ` +
                `${f(s.ttft_first_ms)} ms, later (median of 5) ${f(s.ttft_later_median_ms)} ms`);
  } else {
    console.log('| concurrency | requests | req/s | output tok/s | TTFT median / p99 ms | ' +
                'TPOT median / p99 ms | ITL median / p99 ms |');
    console.log('| ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
    for (const c of levels) {
      const count = opt.requests ? Number(opt.requests) : Math.max(8, 2 * c);
      const r = await runLevel(server.url, c, count);
      report.levels.push(r);
      console.log(`| ${c} | ${count} | ${f(r.request_throughput, 2)} | ` +
                  `${f(r.output_tokens_per_second)} | ${f(r.ttft_ms.median)} / ${f(r.ttft_ms.p99)} | ` +
                  `${f(r.tpot_ms.median, 2)} / ${f(r.tpot_ms.p99, 2)} | ` +
                  `${f(r.itl_ms.median, 2)} / ${f(r.itl_ms.p99, 2)} |`);
    }
    const one = report.levels.find((l) => l.concurrency === 1);
    if (one) {
      for (const l of report.levels) {
        l.speedup_vs_one = l.output_tokens_per_second / one.output_tokens_per_second;
      }
      console.log('output tok/s against concurrency 1: ' +
                  report.levels.map((l) => `${l.concurrency}: ${f(l.speedup_vs_one, 2)}x`).join(', '));
    }
  }
} finally {
  server.child?.kill('SIGTERM');
}
if (opt.json) writeFileSync(opt.json, JSON.stringify(report, null, 2) + '\n');
