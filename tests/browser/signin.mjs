// Drives otpd's reference sign-in page in headless Chromium over the DevTools protocol (Node's
// WebSocket, no npm package for the driving): the whole flow a person goes through, with a
// CDP virtual authenticator (internal transport, user verification on) for the passkey.
//
//   node --experimental-websocket signin.mjs <chromium> <base url> <screenshot dir> <axe.min.js>
//
// It talks to the Rust test over stdin/stdout, one JSON object per line: it asks for the code
// a phone received ({"need":"code"}) and for the node's clock to move ({"need":"advance"}),
// and ends with {"result": {...}} (or {"error": "..."}). Each step is asserted here and
// screenshotted into the directory as NN-step.png.
import { spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";

const [chromium, base, shots, axePath] = process.argv.slice(2);
mkdirSync(shots, { recursive: true });
const profile = mkdtempSync(join(tmpdir(), "otpd-signin-chromium-"));
const browser = spawn(chromium, [
  "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
  "--no-default-browser-check", "--disable-extensions", "--remote-debugging-port=0",
  "--window-size=900,1000", `--user-data-dir=${profile}`, "about:blank",
  // Its own process group, so that finish() stops the renderers and helpers with it.
], { stdio: ["ignore", "ignore", "pipe"], detached: true });
const browserExited = new Promise((r) => browser.once("exit", r));
let stderr = "";
browser.stderr.on("data", (d) => { stderr += d; });

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const out = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
let stepName = "start";
// Stops the whole browser (the process group), waits for it, then removes the profile. A
// helper process still writing there made the removal fail once (ENOTEMPTY), so the removal
// retries, and a profile left behind is reported, not counted as the flow failing.
async function finish(code) {
  try { process.kill(-browser.pid, "SIGKILL"); } catch {}
  await Promise.race([browserExited, sleep(5000)]);
  try {
    rmSync(profile, { recursive: true, force: true, maxRetries: 20, retryDelay: 100 });
  } catch (e) {
    process.stderr.write(`could not remove chromium's profile ${profile}: ${e.message}\n`);
  }
  process.exit(code);
}
async function fail(message) {
  try { await shot("failed-at-" + stepName); } catch {}
  out({ error: `${stepName}: ${message}`, chromium_stderr: stderr.slice(-1500) });
  await finish(2);
}
setTimeout(() => fail("timed out after 120 s"), 120_000).unref();

// Questions to the Rust test, answered on stdin in order.
const answers = [];
const waiting = [];
createInterface({ input: process.stdin }).on("line", (line) => {
  const v = JSON.parse(line);
  if (waiting.length) waiting.shift()(v); else answers.push(v);
});
const ask = (question) => { out(question); return answers.length ? Promise.resolve(answers.shift()) : new Promise((r) => waiting.push(r)); };

// ---- DevTools ----
let port;
for (let i = 0; i < 300 && !port; i++) {
  const file = join(profile, "DevToolsActivePort");
  if (existsSync(file)) port = readFileSync(file, "utf8").split("\n")[0];
  else await sleep(100);
}
if (!port) await fail("chromium did not open its DevTools port");
const targets = await (await fetch(`http://127.0.0.1:${port}/json/list`)).json();
const tab = targets.find((t) => t.type === "page");
const ws = new WebSocket(tab.webSocketDebuggerUrl);
await new Promise((ok, ko) => { ws.onopen = ok; ws.onerror = ko; });
let nextId = 1;
const pending = new Map();
const events = [];
ws.onmessage = (m) => {
  const msg = JSON.parse(m.data);
  if (msg.id && pending.has(msg.id)) { pending.get(msg.id)(msg); pending.delete(msg.id); } else if (msg.method) events.push(msg);
};
async function send(method, params = {}) {
  const msg = await new Promise((ok) => { const id = nextId++; pending.set(id, ok); ws.send(JSON.stringify({ id, method, params })); });
  if (msg.error) await fail(`${method}: ${JSON.stringify(msg.error)}`);
  return msg.result;
}
async function js(expression) {
  const r = await send("Runtime.evaluate", { expression, returnByValue: true, awaitPromise: true, userGesture: true });
  if (r.exceptionDetails) await fail(`${expression.slice(0, 80)}: ${JSON.stringify(r.exceptionDetails).slice(0, 500)}`);
  return r.result.value;
}
let shotNo = 0;
async function shot(name) {
  const png = await send("Page.captureScreenshot", { format: "png" });
  shotNo += 1;
  const file = join(shots, `${String(shotNo).padStart(2, "0")}-${name}.png`);
  writeFileSync(file, Buffer.from(png.data, "base64"));
  return file;
}
async function until(what, expression, ms = 10_000) {
  for (let waited = 0; waited < ms; waited += 50) {
    if (await js(expression)) return;
    await sleep(50);
  }
  await fail(`waited ${ms} ms for ${what} (${expression}); error box: ${await js("document.getElementById('error').textContent")}`);
}
const text = (id) => js(`document.getElementById(${JSON.stringify(id)}).textContent`);
const visible = (id) => `!document.getElementById(${JSON.stringify(id)}).closest("[hidden]")`;
async function type(id, value) {
  await js(`(() => { const e = document.getElementById(${JSON.stringify(id)}); e.focus(); e.value = ""; })()`);
  await send("Input.insertText", { text: value });
}
const click = (id) => js(`document.getElementById(${JSON.stringify(id)}).click()`);
async function expectError(what, pattern) {
  await until(what, `!document.getElementById("error").hidden && ${pattern}.test(document.getElementById("error").textContent)`);
  return text("error");
}
async function axe(where) {
  const result = JSON.parse(await js(`axe.run(document, { resultTypes: ["violations"] }).then((r) => JSON.stringify(r.violations.map((v) => ({ id: v.id, impact: v.impact, nodes: v.nodes.length }))))`));
  const bad = result.filter((v) => v.impact === "serious" || v.impact === "critical");
  if (bad.length) await fail(`axe-core (${where}): ${JSON.stringify(bad)}`);
  return result;
}

await send("Runtime.enable");
await send("Log.enable");
await send("Page.enable");
await send("Network.enable");
// Record every CSP violation the page reports (DevTools scripts are exempt from the policy).
await send("Page.addScriptToEvaluateOnNewDocument", {
  source: `window.__csp = []; document.addEventListener("securitypolicyviolation",
    (e) => window.__csp.push(e.violatedDirective + " " + e.blockedURI));`,
});
await send("WebAuthn.enable");
const { authenticatorId } = await send("WebAuthn.addVirtualAuthenticator", {
  options: { protocol: "ctap2", transport: "internal", hasResidentKey: true, hasUserVerification: true,
             isUserVerified: true, automaticPresenceSimulation: true },
});

const result = { steps: [] };
const done = (name, detail) => { result.steps.push({ step: name, ...detail }); };
const phone = "+12025550177";

// 1. The page, same origin, strict policy.
stepName = "open";
const page = await fetch(base + "/signin");
const csp = page.headers.get("content-security-policy") || "";
if (!csp.includes("script-src 'self'") || !csp.includes("default-src 'none'")) await fail(`CSP header: ${csp}`);
await send("Page.navigate", { url: base + "/signin" });
await until("the page", `document.readyState === "complete" && !!document.getElementById("identifier")`);
const codeField = JSON.parse(await js(`JSON.stringify({ a: code.autocomplete, m: code.inputMode })`));
if (codeField.a !== "one-time-code" || codeField.m !== "numeric") await fail(`code field: ${JSON.stringify(codeField)}`);
await js(readFileSync(axePath, "utf8") + "; true");
const axeStart = await axe("start");
done("open", { csp, axe_minor: axeStart, file: await shot("start") });

// 2. A new account: phone number and names, then a code.
stepName = "send-code";
await click("new-account");
await type("identifier", phone);
await type("first-name", "Ada");
await type("last-name", "Lovelace");
await click("send-code");
await until("the code step", visible("code-title"));
const focused = await js("document.activeElement && document.activeElement.id");
done("send-code", { sent: await text("code-sent"), focused, file: await shot("code-sent") });

// 3. A wrong code: how many tries are left.
stepName = "wrong-code";
const { code: first } = await ask({ need: "code", to: phone });
await type("code", first === "000000" ? "111111" : "000000");
await click("verify-code");
const wrong = await expectError("the wrong-code message", /not right\. You have 4 tries left/);
done("wrong-code", { error: wrong, file: await shot("wrong-code") });

// 4. The right code after its lifetime: expired.
stepName = "expired-code";
await ask({ need: "advance", seconds: 301 });
await type("code", first);
await click("verify-code");
const expired = await expectError("the expired-code message", /expired\. Ask for a new one/);
done("expired-code", { error: expired, file: await shot("expired-code") });

// 5. A new code, then another at once: the cooldown counts down from Retry-After.
stepName = "cooldown";
await js(`document.getElementById("status").textContent = ""`);
await click("resend");
await until("the resent code", `document.getElementById("status").textContent === "Code sent." && document.getElementById("error").hidden`);
await click("resend");
const cooldown = await expectError("the cooldown", /Please wait \d+ seconds/);
const seconds = Number(/(\d+)/.exec(cooldown)[1]);
if (!(seconds >= 25 && seconds <= 30)) await fail(`countdown starts at ${seconds} (Retry-After of a 30 s cooldown)`);
if (!(await js(`document.getElementById("resend").disabled`))) await fail("resend stays enabled in a cooldown");
await sleep(2100);
const later = Number(/(\d+)/.exec(await text("error"))[1]);
if (!(later <= seconds - 2)) await fail(`the countdown did not move: ${seconds} then ${later}`);
done("cooldown", { error: cooldown, later, file: await shot("cooldown") });

// 6. The newest code signs in: who you are and your sessions.
stepName = "signed-in";
const { code: newest } = await ask({ need: "code", to: phone });
await type("code", newest);
await click("verify-code");
await until("the account", visible("who") + ` && /Ada Lovelace/.test(document.getElementById("who").textContent)`);
await until("the sessions", `document.querySelectorAll("#sessions li").length === 1`);
const sessions1 = await text("sessions");
if (!/with a code/.test(sessions1)) await fail(`sessions: ${sessions1}`);
const axeSignedIn = await axe("signed in");
done("signed-in", { who: await text("who"), sessions: sessions1, axe_minor: axeSignedIn, file: await shot("signed-in") });

// 7. Add a passkey (the virtual authenticator creates it, user verified).
stepName = "add-passkey";
await click("add-passkey");
await until("the passkey in the list", `document.querySelectorAll("#passkeys li button").length === 1`);
const creds = await send("WebAuthn.getCredentials", { authenticatorId });
if (creds.credentials.length !== 1 || !creds.credentials[0].isResidentCredential) await fail(`credentials: ${JSON.stringify(creds)}`);
done("add-passkey", { passkeys: await text("passkeys"), status: await text("status"), file: await shot("passkey-added") });

// 8. Sign out. The page then offers the passkey through conditional UI (autofill); the
// virtual authenticator would answer that at once, so it waits for a person until step 9.
stepName = "sign-out";
const presence = (enabled) => send("WebAuthn.setAutomaticPresenceSimulation", { authenticatorId, enabled });
await presence(false);
await click("sign-out");
await until("the start", visible("identifier") + ` && /signed out/.test(document.getElementById("status").textContent)`);
done("sign-out", { status: await text("status"), file: await shot("signed-out") });

// 9. Sign in with the passkey, no identifier typed: the person is present again; the pending
// conditional request may answer by itself, else the button asks.
stepName = "passkey-sign-in";
await sleep(300);
if (await js(visible("who"))) await fail("signed in while nobody was present");
await presence(true);
await sleep(500);
const conditional = await js(visible("who"));
if (!conditional) await click("passkey-signin");
await until("the account", visible("who") + ` && document.querySelectorAll("#sessions li").length >= 1`);
const sessions2 = await text("sessions");
if (!/with a passkey on .* \(this one\)/.test(sessions2)) await fail(`sessions: ${sessions2}`);
const after = await send("WebAuthn.getCredentials", { authenticatorId });
done("passkey-sign-in", { conditional, sessions: sessions2, sign_count: after.credentials[0].signCount, file: await shot("passkey-signed-in") });

// 10. Sign out everywhere.
stepName = "sign-out-everywhere";
await presence(false);
await click("sign-out-all");
await until("the start", visible("identifier") + ` && /everywhere/.test(document.getElementById("status").textContent)`);
await sleep(300);
done("sign-out-everywhere", { status: await text("status"), file: await shot("signed-out-everywhere") });

// 11. Sign in with the passkey again, then remove it: removing a passkey ends the sessions it
// opened, this page's too, so the page goes back to the start and says why.
stepName = "remove-signing-passkey";
await presence(true);
await sleep(500);
if (!(await js(visible("who")))) await click("passkey-signin");
await until("the account", visible("who") + ` && document.querySelectorAll("#passkeys li button").length === 1`);
await presence(false);
await js(`document.querySelector("#passkeys li button").click()`);
await until("the start", visible("identifier") + ` && /removed.*signed out/.test(document.getElementById("error").textContent)`);
done("remove-signing-passkey", { error: await text("error"), file: await shot("passkey-removed") });

// Nothing went wrong on the way: no exception, no console error, no CSP violation, and
// nothing fetched from anywhere but the page's own origin.
stepName = "hygiene";
const violations = await js("JSON.stringify(window.__csp)");
const exceptions = events.filter((e) => e.method === "Runtime.exceptionThrown").map((e) => e.params.exceptionDetails.text + " " + (e.params.exceptionDetails.exception?.description || ""));
const consoleErrors = events.filter((e) => e.method === "Runtime.consoleAPICalled" && ["error", "assert"].includes(e.params.type))
  .map((e) => e.params.args.map((a) => a.value ?? a.description).join(" "));
// The browser logs each 4xx answer the steps above asked for (wrong code, expired code,
// cooldown, the session its removed passkey had opened); those, and only those, are expected.
const expectedStatus = /the server responded with a status of (400|401|429)/;
const logErrors = events.filter((e) => e.method === "Log.entryAdded" && e.params.entry.level === "error")
  .map((e) => ({ source: e.params.entry.source, text: e.params.entry.text, url: e.params.entry.url }));
const unexpectedLog = logErrors.filter((l) => !(l.source === "network" && expectedStatus.test(l.text)));
const foreign = events.filter((e) => e.method === "Network.requestWillBeSent").map((e) => e.params.request.url)
  .filter((u) => !u.startsWith(base) && !u.startsWith("data:"));
if (violations !== "[]" || exceptions.length || consoleErrors.length || unexpectedLog.length || foreign.length) {
  await fail(JSON.stringify({ csp_violations: violations, exceptions, consoleErrors, unexpectedLog, foreign }));
}
result.expected_4xx_logged = logErrors.length;
result.requests = events.filter((e) => e.method === "Network.requestWillBeSent").length;
out({ result });
ws.close();
await finish(0);
