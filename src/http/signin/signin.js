// otpd's reference sign-in page: code by SMS or e-mail, passkeys, sessions, sign-out.
// Tokens live in this script's memory only: never in a URL, a cookie or web storage. An
// app built from this page hands them to its own back end, or keeps them in memory the same way.
"use strict";

const state = { access: null, refresh: null, identifier: null, purpose: "login", cooldown: null, conditional: null };
const $ = (id) => document.getElementById(id);

// ---- base64url <-> bytes, for the WebAuthn options and answers ----
function fromB64url(text) {
  const b64 = text.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((text.length + 3) % 4);
  return Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
}
function toB64url(buffer) {
  const bytes = new Uint8Array(buffer);
  let text = "";
  for (const b of bytes) text += String.fromCharCode(b);
  return btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}
function creationOptions(publicKey) {
  const o = structuredClone(publicKey);
  o.challenge = fromB64url(o.challenge);
  o.user.id = fromB64url(o.user.id);
  for (const c of o.excludeCredentials || []) c.id = fromB64url(c.id);
  return o;
}
function requestOptions(publicKey) {
  const o = structuredClone(publicKey);
  o.challenge = fromB64url(o.challenge);
  for (const c of o.allowCredentials || []) c.id = fromB64url(c.id);
  return o;
}
function credentialJson(cred) {
  if (typeof cred.toJSON === "function") return cred.toJSON();
  const r = cred.response;
  const response = { clientDataJSON: toB64url(r.clientDataJSON) };
  if (r.attestationObject) {
    response.attestationObject = toB64url(r.attestationObject);
    if (r.getTransports) response.transports = r.getTransports();
  } else {
    response.authenticatorData = toB64url(r.authenticatorData);
    response.signature = toB64url(r.signature);
    if (r.userHandle) response.userHandle = toB64url(r.userHandle);
  }
  return { id: cred.id, rawId: toB64url(cred.rawId), type: cred.type, response,
           clientExtensionResults: cred.getClientExtensionResults() };
}

// ---- the API ----
class Problem extends Error {
  constructor(status, body, retryAfter) {
    super(body.detail || body.title || "HTTP " + status);
    this.status = status; this.code = body.code || ""; this.body = body; this.retryAfter = retryAfter;
  }
}
async function api(method, path, body, auth) {
  const headers = { "Accept": "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (auth) headers["Authorization"] = "Bearer " + state.access;
  const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body),
                                credentials: "omit", cache: "no-store" });
  if (r.status === 204) return null;
  const data = await r.json().catch(() => ({}));
  if (!r.ok) throw new Problem(r.status, data, Number(r.headers.get("Retry-After")) || 0);
  return data;
}
function identifierBody(extra) {
  const key = state.identifier.includes("@") ? "email" : "phone";
  return Object.assign({ [key]: state.identifier }, extra || {});
}

// ---- what a person reads ----
function words(e) {
  if (e instanceof Problem) {
    const left = e.body.attempts_left;
    switch (e.code) {
      case "invalid_code": return left > 0 ? `That code is not right. You have ${left} ${left === 1 ? "try" : "tries"} left.`
                                           : "That code is not right, and it cannot be tried again. Ask for a new one.";
      case "code_expired": return "That code has expired. Ask for a new one.";
      case "too_many_attempts": return "Too many wrong tries. Ask for a new code.";
      case "code_already_used": return "That code was already used. Ask for a new one.";
      case "no_pending_code": return "There is no code waiting for you. Ask for a new one.";
      case "invalid_phone": return "That phone number does not look right. Include the country code, like +44 7700 900123.";
      case "invalid_email": return "That e-mail address does not look right.";
      case "invalid_request": return "Please check what you typed: " + (e.body.detail || "something is missing.");
      case "fresh_login_required": return "For your safety, sign in with a code again before adding a passkey.";
      case "passkey_invalid": case "invalid_credential": return "That passkey did not work here. Try again, or sign in with a code.";
      case "user_not_verified": return "Your device did not confirm it was you (fingerprint, face or PIN). Try again.";
      case "passkey_clone_suspected": return "This passkey was refused for your safety. Sign in with a code.";
      case "passkey_exists": return "This passkey is already on your account.";
      case "passkey_limit": return "You have the most passkeys an account can have. Remove one first.";
      case "challenge_expired": case "no_pending_challenge": case "challenge_already_used":
        return "That took too long. Please try again.";
      case "invalid_token": case "missing_token": return "You have been signed out. Please sign in again.";
      case "unavailable": case "owner_unreachable": case "delivery_busy":
        return "The service is busy. Please try again in a moment.";
    }
    if (e.status === 429) return null; // a countdown says it (see `show`)
    return e.body.title ? `${e.body.title}.` : "Something went wrong. Please try again.";
  }
  if (e && e.name === "NotAllowedError") return "The passkey request was cancelled or timed out.";
  if (e && e.name === "InvalidStateError") return "This device already has a passkey for your account.";
  if (e && e.name === "AbortError") return null;
  return "Something went wrong. Please check your connection and try again.";
}
function say(text) { $("status").textContent = text || ""; }
function showError(text) {
  const box = $("error");
  box.textContent = text || "";
  box.hidden = !text;
}
function clearCooldown() {
  if (state.cooldown) clearInterval(state.cooldown);
  state.cooldown = null;
  for (const id of ["send-code", "resend"]) $(id).disabled = false;
}
function startCooldown(seconds) {
  clearCooldown();
  let left = seconds;
  const tick = () => {
    if (left <= 0) { clearCooldown(); showError(""); say("You can ask for a code again."); return; }
    showError(`Please wait ${left} ${left === 1 ? "second" : "seconds"} before asking for another code.`);
    left -= 1;
  };
  for (const id of ["send-code", "resend"]) $(id).disabled = true;
  tick();
  state.cooldown = setInterval(tick, 1000);
}
function show(e) {
  if (e instanceof Problem && e.status === 429) return startCooldown(Math.max(1, e.retryAfter || 1));
  if (sessionEnded(e)) return signedOut(words(e));
  const text = words(e);
  if (text) showError(text);
}
function step(id, focus) {
  for (const s of ["step-identifier", "step-code", "step-signed-in"]) $(s).hidden = s !== id;
  $("title").textContent = id === "step-signed-in" ? "Your account" : "Sign in";
  if (focus) $(focus).focus();
}
async function busy(button, work) {
  button.disabled = true;
  showError("");
  try { await work(); } catch (e) { show(e); } finally { if (!state.cooldown || button.id === "verify-code") button.disabled = false; }
}

// ---- codes ----
async function sendCode(purpose) {
  state.purpose = purpose;
  const body = purpose === "register"
    ? identifierBody({ first_name: $("first-name").value.trim(), last_name: $("last-name").value.trim() })
    : identifierBody();
  const sent = await api("POST", purpose === "register" ? "/v1/register" : "/v1/login", body);
  where(sent);
}
function where(sent) {
  const via = sent && sent.channel === "email" ? "by e-mail" : "by text message";
  $("code-sent").textContent = `If ${state.identifier} can sign in here, a code is on its way ${via}.`;
  say("Code sent.");
  step("step-code", "code-title");
  $("code").value = "";
  $("code").focus();
  listenForSms();
}
function listenForSms() {
  // WebOTP: the browser reads the code from the SMS's last line (@host #code) where it can.
  if (!("OTPCredential" in window)) return;
  const ac = new AbortController();
  $("code-form").addEventListener("submit", () => ac.abort(), { once: true });
  navigator.credentials.get({ otp: { transport: ["sms"] }, signal: ac.signal }).then((otp) => {
    if (otp && otp.code) { $("code").value = otp.code; $("code-form").requestSubmit(); }
  }).catch(() => {});
}
async function verifyCode() {
  const code = $("code").value.replace(/\s+/g, "");
  if (!code) { showError("Enter the code we sent you."); return; }
  const path = state.purpose === "register" ? "/v1/register/verify" : "/v1/login/verify";
  signedIn(await api("POST", path, identifierBody({ code })));
}

// ---- signed in ----
async function signedIn(tokens) {
  if (state.conditional) state.conditional.abort();
  state.access = tokens.access_token;
  state.refresh = tokens.refresh_token;
  clearCooldown();
  showError("");
  await render();
  step("step-signed-in", "who");
  say("You are signed in.");
}
async function render() {
  const me = await api("GET", "/v1/me", undefined, true);
  const u = me.user;
  $("who").textContent = `Signed in as ${u.first_name} ${u.last_name}`;
  $("identity").textContent = u.phone || u.email || "";
  const sessions = await api("GET", "/v1/sessions", undefined, true);
  const list = $("sessions");
  list.replaceChildren(...sessions.sessions.map((s) => {
    const li = document.createElement("li");
    const how = { otp: "a code", device: "a device key", passkey: "a passkey" }[s.method] || s.method;
    li.textContent = `Signed in with ${how} on ${new Date(s.created_at).toLocaleString()}` + (s.current ? " (this one)" : "");
    return li;
  }));
  const keys = await api("GET", "/v1/passkeys", undefined, true);
  $("passkeys").replaceChildren(...(keys.passkeys.length ? keys.passkeys.map((p) => {
    const li = document.createElement("li");
    li.textContent = p.name;
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "secondary";
    remove.textContent = "Remove";
    remove.setAttribute("aria-label", `Remove passkey ${p.name}`);
    remove.addEventListener("click", () => busy(remove, async () => {
      await api("DELETE", "/v1/passkeys/" + p.id, undefined, true);
      // Removing a passkey ends the sessions it opened: this one too, if it signed in here.
      try { await render(); } catch (e) {
        if (!sessionEnded(e)) throw e;
        return signedOut(`“${p.name}” removed. You had signed in with it here, so you are signed out.`);
      }
      say(`“${p.name}” removed.`);
    }));
    li.append(remove);
    return li;
  }) : [Object.assign(document.createElement("li"), { textContent: "No passkeys yet." })]));
}
async function addPasskey() {
  const o = await api("POST", "/v1/passkeys/options", undefined, true);
  const cred = await navigator.credentials.create({ publicKey: creationOptions(o.options.publicKey) });
  const name = `Passkey on ${navigator.platform || "this device"}`;
  await api("POST", "/v1/passkeys", { name, credential: credentialJson(cred) }, true);
  await render();
  say("Passkey added. Next time, sign in with it.");
}
async function signOut(all) {
  await api("POST", all ? "/v1/logout/all" : "/v1/logout", undefined, true).catch(() => {});
  signedOut();
  say(all ? "You are signed out everywhere." : "You are signed out.");
}
// This page's session ended elsewhere (signed out everywhere, its passkey removed).
function sessionEnded(e) {
  return e instanceof Problem && ["invalid_token", "missing_token"].includes(e.code) && state.access !== null;
}
function signedOut(why) {
  state.access = state.refresh = null;
  step("step-identifier", "title");
  say("");
  if (why) showError(why);
  startConditional();
}

// ---- passkey sign-in ----
async function passkeySignIn(mediation, signal) {
  const o = await api("POST", "/v1/passkey-login/options");
  const request = { publicKey: requestOptions(o.options.publicKey) };
  if (mediation) request.mediation = mediation;
  if (signal) request.signal = signal;
  const cred = await navigator.credentials.get(request);
  signedIn(await api("POST", "/v1/passkey-login/verify", { credential: credentialJson(cred) }));
}
async function startConditional() {
  // Conditional UI: the browser offers passkeys in the identifier field's autofill.
  if (!window.PublicKeyCredential || !PublicKeyCredential.isConditionalMediationAvailable) return;
  if (!(await PublicKeyCredential.isConditionalMediationAvailable())) return;
  if (state.conditional) state.conditional.abort();
  const ac = new AbortController();
  state.conditional = ac;
  passkeySignIn("conditional", ac.signal).catch((e) => { if (!ac.signal.aborted) show(e); });
}

// ---- wiring ----
document.addEventListener("DOMContentLoaded", () => {
  $("new-account").addEventListener("change", (e) => { $("names").hidden = !e.target.checked; });
  $("identifier-form").addEventListener("submit", (e) => {
    e.preventDefault();
    state.identifier = $("identifier").value.trim();
    if (!state.identifier) { showError("Enter your phone number or e-mail address."); $("identifier").focus(); return; }
    busy($("send-code"), () => sendCode($("new-account").checked ? "register" : "login"));
  });
  $("code-form").addEventListener("submit", (e) => { e.preventDefault(); busy($("verify-code"), verifyCode); });
  $("resend").addEventListener("click", () => busy($("resend"), async () => {
    where(await api("POST", "/v1/otp/resend", identifierBody({ purpose: state.purpose })));
  }));
  $("back").addEventListener("click", () => { clearCooldown(); showError(""); step("step-identifier", "identifier"); });
  $("passkey-signin").addEventListener("click", () => {
    if (state.conditional) state.conditional.abort();
    busy($("passkey-signin"), () => passkeySignIn(null, null));
  });
  $("add-passkey").addEventListener("click", () => busy($("add-passkey"), addPasskey));
  $("sign-out").addEventListener("click", () => busy($("sign-out"), () => signOut(false)));
  $("sign-out-all").addEventListener("click", () => busy($("sign-out-all"), () => signOut(true)));
  startConditional();
});
