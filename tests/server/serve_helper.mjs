// What the end-to-end tests of `dsa serve` share (openai_e2e.mjs, ai_sdk_e2e.mjs,
// web_page_e2e.mjs): the skip rules, loading an npm package from scripts/npm, starting the real
// server on a free loopback port, running a list of tests against it, and stopping it with
// SIGTERM, which must end it cleanly (status 0) and promptly.
//
// Each test script is run as `node SCRIPT path/to/dsa` and exits 0 (all passed), 1 (a failure)
// or 77 (ctest: skipped: no built-in model, or a package or program it needs is missing).
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const SKIP = 77;

export function skip(why) {
  console.log(`skipped: ${why}`);
  process.exit(SKIP);
}

// The dsa binary from the command line; skips when the build has no built-in model (the tests
// serve it, so that no model folder is needed).
export function dsaFromArgs(script) {
  const dsa = process.argv[2];
  if (!dsa) {
    console.error(`usage: node ${script} path/to/dsa`);
    process.exit(2);
  }
  if (process.env.DSA_HAS_EMBEDDED_MODEL === '0') skip('this dsa binary has no built-in model');
  return dsa;
}

// An npm package installed in scripts/npm (pinned there; scripts/setup.sh installs it), or a
// skip when it is not installed.
export function requirePackage(name) {
  const here = path.dirname(fileURLToPath(import.meta.url));
  const npmDir = process.env.DSA_NPM_DIR ?? path.join(here, '..', '..', 'scripts', 'npm');
  try {
    return createRequire(path.join(npmDir, 'package.json'))(name);
  } catch {
    skip(`the ${name} package is not installed in ${npmDir} (scripts/setup.sh does it)`);
  }
}

// Starts `dsa serve --port 0 ARGS...`; `port` resolves from its "listening" line.
export function startServer(dsa, args) {
  const child = spawn(dsa, ['serve', '--port', '0', ...args],
                      { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  const port = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no "listening" line in 20 s:\n${log}`)), 20000);
    child.stderr.on('data', (d) => {
      log += d;
      const m = log.match(/listening on http:\/\/127\.0\.0\.1:(\d+)/);
      if (m) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    });
    child.on('exit', (code) => reject(new Error(`dsa serve exited with ${code}:\n${log}`)));
  });
  return { child, port, log: () => log };
}

// /health answers 503 while the model loads, then 200.
export async function waitHealthy(base) {
  const deadline = Date.now() + 30000;
  for (;;) {
    const r = await fetch(`${base}/health`).catch(() => null);
    if (r && r.status === 200) return;
    if (r) assert.equal(r.status, 503, 'health is 503 while loading, then 200');
    if (Date.now() > deadline) throw new Error('the server did not become healthy in 30 s');
    await new Promise((res) => setTimeout(res, 50));
  }
}

// One value of /metrics (Prometheus text), or undefined when the line is missing.
export async function metric(base, name) {
  const text = await (await fetch(`${base}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `) || l.startsWith(`${name}{`));
  return line === undefined ? undefined : Number(line.split(' ').at(-1));
}

// Waits until no request runs and the count of aborted requests has passed `abortsBefore`:
// a cancelled stream must free the server at once.
export async function waitAborted(base, abortsBefore, ms = 5000) {
  const abortName = 'dsa:request_success_total{finished_reason="abort"}';
  const deadline = Date.now() + ms;
  while ((await metric(base, 'dsa:num_requests_running')) !== 0 ||
         ((await metric(base, abortName)) ?? 0) === abortsBefore) {
    assert.ok(Date.now() < deadline, `the cancelled request still runs after ${ms} ms`);
    await new Promise((res) => setTimeout(res, 20));
  }
}

export async function abortCount(base) {
  return (await metric(base, 'dsa:request_success_total{finished_reason="abort"}')) ?? 0;
}

// Starts the server with `serverArgs`, calls `setup(base)` for the context the tests get (with
// `base` added), runs the tests in order, stops the server with SIGTERM (checking that it exits
// with 0 within 15 s), calls `teardown` when given, and exits with 0 or 1.
export async function runSuite({ dsa, serverArgs, tests, setup = async () => ({}),
                                 teardown = async () => {} }) {
  const server = startServer(dsa, serverArgs);
  let failed = 0;
  try {
    const port = await server.port;
    const base = `http://127.0.0.1:${port}`;
    await waitHealthy(base);
    const context = { base, ...(await setup(base)) };
    for (const { name, fn } of tests) {
      const start = Date.now();
      try {
        await fn(context);
        console.log(`ok   ${name} (${Date.now() - start} ms)`);
      } catch (e) {
        failed++;
        console.log(`FAIL ${name}\n${e.stack ?? e}`);
      }
    }
  } catch (e) {
    failed++;
    console.log(`FAIL server: ${e.stack ?? e}\n${server.log()}`);
  }
  try {
    await teardown();
  } catch (e) {
    failed++;
    console.log(`FAIL teardown: ${e.stack ?? e}`);
  }
  const exited = new Promise((res) => server.child.once('exit', (code, sig) => res({ code, sig })));
  const stopStart = Date.now();
  server.child.kill('SIGTERM');
  const timeout = new Promise((res) => setTimeout(() => res(null), 15000));
  const result = await Promise.race([exited, timeout]);
  if (!result) {
    failed++;
    console.log('FAIL the server did not exit within 15 s of SIGTERM');
    server.child.kill('SIGKILL');
  } else if (result.code !== 0) {
    failed++;
    console.log(`FAIL the server exited with ${result.code ?? result.sig} after SIGTERM\n${server.log()}`);
  }
  if (result) console.log(`server stopped ${Date.now() - stopStart} ms after SIGTERM`);
  console.log(failed ? `${failed} failed` : `all ${tests.length} passed`);
  process.exit(failed ? 1 : 0);
}
