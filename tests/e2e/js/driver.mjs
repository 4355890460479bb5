#!/usr/bin/env node
// Browser side of rtc2sip's end-to-end tests, driven from Python (tests/e2e/harness/browser.py).
//
// Protocol: one JSON object per line. Python writes {"id": n, "cmd": "...", ...}; the driver answers
// {"id": n, "ok": true, "result": ...} or {"id": n, "ok": false, "error": "..."}, in completion order.
// Unsolicited lines carry "event" instead of "id" (the first one is {"event": "ready", "url": ...}).
// Commands:
//   open  {page, stack?, toneWav?, userDataDir, logPath?, extraArgs?}  launch a Chromium (own profile,
//         own fake microphone) with one phone page, on JsSIP (stack "jssip", the default: index.html)
//         or SIP.js ("sipjs": sipjs.html); tone WAVs are per process, so one Chromium per phone
//   call  {page, fn, args}   await window.rtc[fn](...args) in that page
//   eval  {page, expr}       await an arbitrary expression in that page (escape hatch)
//   close {page}
//   shutdown
// When stdin closes (Python died), every browser is closed and the driver exits.

import { createServer } from 'node:http';
import { readFile, mkdir } from 'node:fs/promises';
import { createWriteStream } from 'node:fs';
import { createInterface } from 'node:readline';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
const executablePath = process.env.RTC2SIP_CHROMIUM || '/usr/bin/chromium';

// TESTING.md: without --allow-loopback-in-peer-connection Chromium gathers no loopback candidates,
// ICE never completes and JsSIP never sends the INVITE.
const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--use-fake-device-for-media-stream',
  '--use-fake-ui-for-media-stream',
  '--autoplay-policy=no-user-gesture-required',
  '--allow-loopback-in-peer-connection',
];

const FILES = {
  '/': ['page/index.html', 'text/html; charset=utf-8'],
  '/index.html': ['page/index.html', 'text/html; charset=utf-8'],
  '/app.js': ['page/app.js', 'text/javascript; charset=utf-8'],
  '/media.js': ['page/media.js', 'text/javascript; charset=utf-8'],
  '/jssip.js': ['dist/jssip.js', 'text/javascript; charset=utf-8'],
  '/sipjs.html': ['page/sipjs.html', 'text/html; charset=utf-8'],
  '/sipjs_app.js': ['page/sipjs_app.js', 'text/javascript; charset=utf-8'],
  '/sipjs.js': ['dist/sipjs.js', 'text/javascript; charset=utf-8'],
};

// What each stack's page is and how to tell it loaded.
const STACKS = {
  jssip: { path: '', ready: () => window.rtc && window.JsSIP, version: () => ({ jssip: JsSIP.version }) },
  sipjs: { path: 'sipjs.html', ready: () => window.rtc && window.SIP, version: () => ({ sipjs: SIP.version }) },
};

// JsSIP's debug output styles its lines for the devtools console ("%cJsSIP:UA %c... color: #..."), noise
// in a log file.
function plain(text) {
  return text.replace(/%c/g, '').replace(/( color: (#[0-9A-Fa-f]{6}|inherit))+$/, '');
}

function send(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

// A secure context is needed for navigator.mediaDevices: http://127.0.0.1 is one, about:blank is not.
function startServer() {
  const server = createServer(async (req, res) => {
    const entry = FILES[new URL(req.url, 'http://x').pathname];
    if (!entry) {
      res.writeHead(404).end();
      return;
    }
    try {
      const body = await readFile(join(here, entry[0]));
      res.writeHead(200, { 'Content-Type': entry[1], 'Cache-Control': 'no-store' }).end(body);
    } catch (e) {
      res.writeHead(500).end(String(e));
    }
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

const pages = new Map(); // name -> {context, page, log}

async function open(msg, baseUrl) {
  if (pages.has(msg.page)) throw new Error(`page ${msg.page} already open`);
  const stack = STACKS[msg.stack || 'jssip'];
  if (!stack) throw new Error(`unknown stack ${msg.stack}`);
  await mkdir(msg.userDataDir, { recursive: true });
  const log = createWriteStream(msg.logPath || join(msg.userDataDir, 'console.log'), { flags: 'a' });
  const stamp = () => new Date().toISOString().slice(11, 23);
  const args = [...CHROMIUM_ARGS, ...(msg.extraArgs || [])];
  if (msg.toneWav) args.push(`--use-file-for-fake-audio-capture=${msg.toneWav}`);
  const context = await chromium.launchPersistentContext(msg.userDataDir, {
    executablePath,
    headless: true,
    args,
    // Playwright mutes audio in headless mode; the remote track must be audible to WebAudio.
    ignoreDefaultArgs: ['--mute-audio'],
    permissions: ['microphone'],
    timeout: 30000,
  });
  const page = context.pages()[0] || (await context.newPage());
  page.on('console', (m) => log.write(`${stamp()} ${m.type()}: ${plain(m.text())}\n`));
  page.on('pageerror', (e) => log.write(`${stamp()} PAGEERROR: ${e.stack || e}\n`));
  page.on('crash', () => log.write(`${stamp()} PAGE CRASHED\n`));
  context.on('close', () => log.write(`${stamp()} context closed\n`));
  pages.set(msg.page, { context, page, log });
  const url = baseUrl + stack.path;
  await page.goto(url, { waitUntil: 'load', timeout: 15000 });
  await page.waitForFunction(stack.ready, null, { timeout: 10000 });
  const version = Object.assign(await page.evaluate(stack.version), await page.evaluate(() => ({ userAgent: navigator.userAgent })));
  log.write(`${stamp()} opened ${url}: ${JSON.stringify(version)} args=${JSON.stringify(args)}\n`);
  return version;
}

function get(name) {
  const p = pages.get(name);
  if (!p) throw new Error(`no page named ${name}`);
  return p;
}

async function close(name) {
  const p = pages.get(name);
  if (!p) return false;
  pages.delete(name);
  await p.context.close().catch(() => {});
  p.log.end();
  return true;
}

async function closeAll() {
  await Promise.all([...pages.keys()].map(close));
}

async function handle(msg, baseUrl) {
  switch (msg.cmd) {
    case 'open':
      return open(msg, baseUrl);
    case 'call':
      return get(msg.page).page.evaluate(
        ([fn, args]) => {
          if (typeof window.rtc[fn] !== 'function') throw new Error(`window.rtc has no ${fn}`);
          return window.rtc[fn](...args);
        },
        [msg.fn, msg.args || []],
      );
    case 'eval':
      return get(msg.page).page.evaluate(msg.expr);
    case 'close':
      return close(msg.page);
    case 'shutdown':
      await closeAll();
      setImmediate(() => process.exit(0));
      return true;
    default:
      throw new Error(`unknown command ${msg.cmd}`);
  }
}

async function main() {
  const server = await startServer();
  const baseUrl = `http://127.0.0.1:${server.address().port}/`;
  const rl = createInterface({ input: process.stdin });
  rl.on('line', (line) => {
    if (!line.trim()) return;
    let msg;
    try {
      msg = JSON.parse(line);
    } catch (e) {
      send({ event: 'error', error: `bad JSON: ${e}` });
      return;
    }
    handle(msg, baseUrl).then(
      (result) => send({ id: msg.id, ok: true, result: result === undefined ? null : result }),
      (err) => send({ id: msg.id, ok: false, error: String((err && err.stack) || err) }),
    );
  });
  rl.on('close', async () => {
    await closeAll();
    process.exit(0);
  });
  for (const sig of ['SIGTERM', 'SIGINT']) {
    process.on(sig, async () => {
      await closeAll();
      process.exit(0);
    });
  }
  send({ event: 'ready', url: baseUrl, chromium: executablePath });
}

main().catch((e) => {
  send({ event: 'fatal', error: String((e && e.stack) || e) });
  process.exit(1);
});
