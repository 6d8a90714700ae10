// Opens an HTML page in headless Chromium over the DevTools protocol (Node's WebSocket, no
// npm package) and prints what a reader would get, as JSON: every <svg> with its number of
// drawn elements and its size on the page, console messages and exceptions, and every
// request the page made besides its own file. Optionally saves a full-page screenshot.
//
//   node --experimental-websocket check.mjs <chromium> <page.html> [screenshot.png]
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

const [chromium, page, shot] = process.argv.slice(2);
const profile = mkdtempSync(join(tmpdir(), "otpd-report-chromium-"));
const browser = spawn(chromium, [
  "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--no-default-browser-check",
  "--disable-extensions", "--disable-background-networking", "--remote-debugging-port=0",
  `--user-data-dir=${profile}`, "about:blank",
], { stdio: ["ignore", "ignore", "pipe"] });
let stderr = "";
browser.stderr.on("data", (d) => { stderr += d; });

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
function fail(message) {
  console.log(JSON.stringify({ error: message, chromium_stderr: stderr.slice(-2000) }));
  browser.kill("SIGKILL");
  rmSync(profile, { recursive: true, force: true });
  process.exit(2);
}
setTimeout(() => fail("timed out after 60 s"), 60_000).unref();

// Chromium writes its port and browser target to DevToolsActivePort once it listens.
let port;
for (let i = 0; i < 300 && !port; i++) {
  const file = join(profile, "DevToolsActivePort");
  if (existsSync(file)) port = readFileSync(file, "utf8").split("\n")[0];
  else await sleep(100);
}
if (!port) fail("chromium did not open its DevTools port");
const targets = await (await fetch(`http://127.0.0.1:${port}/json/list`)).json();
const tab = targets.find((t) => t.type === "page");
if (!tab) fail("no page target");

const ws = new WebSocket(tab.webSocketDebuggerUrl);
await new Promise((ok, ko) => { ws.onopen = ok; ws.onerror = ko; });
let nextId = 1;
const pending = new Map();
const events = [];
ws.onmessage = (m) => {
  const msg = JSON.parse(m.data);
  if (msg.id && pending.has(msg.id)) { pending.get(msg.id)(msg); pending.delete(msg.id); }
  else if (msg.method) events.push(msg);
};
const send = (method, params = {}) => new Promise((ok) => {
  const id = nextId++;
  pending.set(id, ok);
  ws.send(JSON.stringify({ id, method, params }));
});

await send("Runtime.enable");
await send("Log.enable");
await send("Network.enable");
await send("Page.enable");
const url = "file://" + resolve(page);
await send("Page.navigate", { url });
for (let i = 0; i < 200 && !events.some((e) => e.method === "Page.loadEventFired"); i++) await sleep(50);
if (!events.some((e) => e.method === "Page.loadEventFired")) fail("the page never finished loading");
await sleep(300);

const probe = `JSON.stringify([...document.querySelectorAll("svg")].map((s) => {
  const r = s.getBoundingClientRect();
  return { id: s.id, drawn: s.querySelectorAll("path,polyline,line,rect,circle,text").length,
           width: r.width, height: r.height };
}))`;
const result = await send("Runtime.evaluate", { expression: probe, returnByValue: true });
const svgs = JSON.parse(result.result.result.value);
const tables = (await send("Runtime.evaluate", { expression: "document.querySelectorAll('table').length", returnByValue: true })).result.result.value;

const console_messages = events
  .filter((e) => e.method === "Runtime.consoleAPICalled")
  .map((e) => ({ level: e.params.type, text: e.params.args.map((a) => a.value ?? a.description).join(" ") }));
const exceptions = events
  .filter((e) => e.method === "Runtime.exceptionThrown")
  .map((e) => e.params.exceptionDetails.text);
const log_entries = events
  .filter((e) => e.method === "Log.entryAdded")
  .map((e) => ({ level: e.params.entry.level, text: e.params.entry.text, url: e.params.entry.url }));
const requests = events
  .filter((e) => e.method === "Network.requestWillBeSent")
  .map((e) => e.params.request.url)
  .filter((u) => u !== url);

if (shot) {
  const metrics = await send("Page.getLayoutMetrics");
  const size = metrics.result.cssContentSize;
  await send("Emulation.setDeviceMetricsOverride", { width: 1000, height: Math.ceil(size.height), deviceScaleFactor: 1, mobile: false });
  const png = await send("Page.captureScreenshot", { format: "png", captureBeyondViewport: true });
  writeFileSync(shot, Buffer.from(png.result.data, "base64"));
}

console.log(JSON.stringify({ svgs, tables, console: console_messages, exceptions, log: log_entries, requests }));
ws.close();
browser.kill("SIGKILL");
await sleep(200);
rmSync(profile, { recursive: true, force: true });
process.exit(0);
