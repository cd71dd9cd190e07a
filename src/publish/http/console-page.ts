/**
 * The console's page: one HTML file, its script and its style, served from memory (no build step, no framework:
 * the page is a grid of camera cards fed by `/api/status` every 2 s and `/api/events` per frame). The script is
 * plain browser JavaScript kept as a string here so that `tsc` ships it in dist/ with the rest.
 */

const INDEX_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>stpmd console</title>
<link rel="stylesheet" href="/console.css">
<script src="/console.js" defer></script>
</head>
<body>
<header>
  <h1>stpmd</h1>
  <span id="ready" class="badge">…</span>
  <span id="node"></span>
  <span class="spacer"></span>
  <span id="stream" class="badge">connecting</span>
  <form id="login" autocomplete="on">
    <input id="user" name="username" placeholder="operator" autocomplete="username" size="10">
    <input id="password" name="password" type="password" placeholder="password" autocomplete="current-password" size="10">
    <button id="login-button" type="submit">Log in</button>
  </form>
  <span id="who" hidden></span>
  <button id="logout" type="button" hidden>Log out</button>
</header>
<section id="controls" class="controls">
  <label><input id="collection" type="checkbox" disabled> collect normal frames</label>
  <span id="collected"></span>
  <button id="reload" type="button" disabled>Reload config and models</button>
  <span id="models"></span>
</section>
<main id="cameras"></main>
<section>
  <h2>Commands</h2>
  <ol id="log" reversed></ol>
</section>
</body>
</html>
`;

const CONSOLE_CSS = `
:root { color-scheme: dark; --bg: #14171a; --card: #1e2328; --line: #2e353c; --text: #e6e9ec; --dim: #8d98a3;
  --ok: #2fb36d; --bad: #e5484d; --warn: #e2a336; --accent: #3b82f6; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.4 system-ui, sans-serif; background: var(--bg); color: var(--text); }
header, .controls { display: flex; gap: 12px; align-items: center; padding: 10px 16px; border-bottom: 1px solid var(--line); flex-wrap: wrap; }
h1 { font-size: 18px; margin: 0; }
h2 { font-size: 15px; margin: 16px 16px 4px; color: var(--dim); }
.spacer { flex: 1; }
.badge { padding: 2px 8px; border-radius: 10px; background: var(--line); font-size: 12px; }
.badge.ok { background: var(--ok); color: #04130a; } .badge.bad { background: var(--bad); } .badge.warn { background: var(--warn); color: #1a1204; }
#cameras { display: grid; grid-template-columns: repeat(auto-fill, minmax(420px, 1fr)); gap: 16px; padding: 16px; }
.camera { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 12px; }
.camera.defect, .camera.error { border-color: var(--bad); }
.camera h3 { margin: 0 0 8px; font-size: 16px; display: flex; gap: 8px; align-items: center; }
.images { display: grid; grid-template-columns: 1fr 1fr; gap: 8px; }
figure { margin: 0; } figcaption { color: var(--dim); font-size: 12px; }
.frame { aspect-ratio: 1; background: #0c0e10; border-radius: 4px; }
.frame img { width: 100%; height: 100%; object-fit: contain; border-radius: 4px; }
.frame img:not([src]) { visibility: hidden; }
canvas { width: 100%; height: 70px; margin-top: 8px; background: #101316; border-radius: 4px; }
dl { display: grid; grid-template-columns: auto 1fr auto 1fr; gap: 2px 10px; margin: 8px 0; }
dt { color: var(--dim); } dd { margin: 0; font-variant-numeric: tabular-nums; }
.score { font-size: 22px; font-variant-numeric: tabular-nums; } .score.bad { color: var(--bad); }
.row { display: flex; gap: 8px; align-items: center; flex-wrap: wrap; }
input, button { font: inherit; background: #101316; color: var(--text); border: 1px solid var(--line); border-radius: 4px; padding: 3px 6px; }
button:not(:disabled) { cursor: pointer; border-color: var(--accent); } button:disabled, input:disabled { opacity: .5; }
#log { margin: 0 16px 16px; padding-left: 24px; color: var(--dim); font: 12px/1.5 ui-monospace, monospace; }
#log .error { color: var(--bad); } #log .ok { color: var(--text); }
`;

const CONSOLE_JS = `"use strict";
const HISTORY = 300;          // scores kept per camera for the sparkline
const IMAGE_EVERY_MS = 500;   // each of a card's two images is fetched at most this often
const $ = (id) => document.getElementById(id);
const cards = new Map();
let credentials = null;       // {user, header}; kept in this page only
let status = null;

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value; else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function fmt(value, digits = 4) {
  return value === null || value === undefined ? "–" : Number(value).toPrecision(digits);
}

function ruleText(rule) {
  if (rule === "bundle") return "bundle";
  const [key, value] = Object.entries(rule)[0];
  return key === "value" ? "fixed" : key + " " + value;
}

// "0 % (≤ 9.5 %) of 30": the threshold's predicted false-alarm rate on the bundle's validation normals
function falseAlarmText(p) {
  if (!p || p.rate === null) return "–";
  const pct = (x) => Number((x * 100).toPrecision(2)) + " %";
  return pct(p.rate) + " (≤ " + pct(p.upper95) + ") of " + p.normals;
}

function card(id) {
  let c = cards.get(id);
  if (c) return c;
  const root = el("article", { class: "camera", "data-camera": id });
  const state = el("span", { class: "badge" });
  const enabled = el("input", { type: "checkbox", "data-role": "enabled", disabled: "" });
  const score = el("span", { class: "score", "data-role": "score" }, "–");
  const live = el("img", { alt: id + " last frame", "data-role": "last" });
  const defect = el("img", { alt: id + " last defect", "data-role": "defect" });
  const canvas = el("canvas", { width: "600", height: "100" });
  const threshold = el("input", { type: "number", step: "any", min: "0", size: "8", "data-role": "threshold-input", disabled: "" });
  const set = el("button", { type: "button", "data-role": "set-threshold", disabled: "" }, "Set threshold");
  const values = {};
  const dl = el("dl");
  for (const [key, label] of [["fps", "fps"], ["inspected", "inspected"], ["defects", "defects"], ["errors", "errors"], ["threshold", "threshold"],
    ["rule", "rule"], ["far", "false alarms"], ["aggregation", "part score"], ["bad", "bad frames"], ["dropped", "dropped"], ["model", "model"]]) {
    values[key] = el("dd", { "data-role": key }, "–");
    dl.append(el("dt", {}, label), values[key]);
  }
  root.append(
    el("h3", {}, id, state, el("label", { class: "row" }, enabled, "enabled")),
    el("div", { class: "row" }, "score ", score),
    el("div", { class: "images" },
      el("figure", {}, el("div", { class: "frame" }, live), el("figcaption", { "data-role": "last-caption" }, "last frame")),
      el("figure", {}, el("div", { class: "frame" }, defect), el("figcaption", { "data-role": "defect-caption" }, "no defect since start"))),
    canvas, dl,
    el("div", { class: "row" }, threshold, set));
  $("cameras").append(root);
  enabled.addEventListener("change", () => command("enable_camera", { camera: id, enabled: enabled.checked }));
  set.addEventListener("click", () => {
    const value = Number(threshold.value);
    command("set_threshold", { camera: id, threshold: value });
  });
  c = { root, state, enabled, score, live, defect, canvas, threshold, set, values, scores: [], drawn: false,
    images: { last: { next: 0, timer: null, pending: null }, defect: { next: 0, timer: null, pending: null } } };
  cards.set(id, c);
  return c;
}

function renderStatus(s) {
  status = s;
  const ready = $("ready");
  ready.textContent = s.ready ? "ready" : "not ready";
  ready.className = "badge " + (s.ready ? "ok" : "bad");
  $("node").textContent = fmt(s.fps, 3) + " fps · " + s.inspected + " inspected · up " + Math.round(s.uptime_s) + " s · outbox " + s.outbox.queued +
    (s.outbox.lost + s.outbox.overflowed > 0 ? " (lost " + s.outbox.lost + ", refused " + s.outbox.overflowed + ")" : "");
  $("models").textContent = s.models.map((m) => m.bundle.split("/").pop() + " " + m.model_version).join(" · ");
  $("collection").checked = s.collection.enabled;
  const k = s.collection;
  $("collected").textContent = k.saved + k.failed + k.dropped === 0 ? "" : k.saved + " saved" +
    (k.failed + k.dropped > 0 ? " (failed " + k.failed + ", dropped " + k.dropped + ")" : "");
  const writable = credentials !== null && s.console.operators;
  $("collection").disabled = !writable;
  $("reload").disabled = !writable;
  $("login").hidden = !s.console.operators || credentials !== null;
  for (const cam of s.cameras) {
    const c = card(cam.id);
    c.state.textContent = cam.state;
    c.state.className = "badge " + (cam.state === "streaming" ? "ok" : cam.state === "disabled" || cam.state === "stopped" ? "" : "warn");
    c.enabled.checked = cam.enabled;
    c.enabled.disabled = !writable;
    c.threshold.disabled = !writable;
    c.set.disabled = !writable;
    c.values.fps.textContent = fmt(cam.fps, 3);
    c.values.inspected.textContent = cam.inspected;
    c.values.defects.textContent = cam.defects;
    c.values.errors.textContent = cam.errors;
    c.values.threshold.textContent = fmt(cam.threshold);
    c.values.rule.textContent = ruleText(cam.threshold_rule);
    c.values.far.textContent = falseAlarmText(cam.predicted_false_alarms);
    c.values.far.title = "predicted false-alarm rate of the threshold on the bundle's validation normals, with its 95 % upper bound";
    c.values.aggregation.textContent = cam.part_score ?? "–";
    c.values.bad.textContent = cam.bad_frames;
    c.values.dropped.textContent = cam.dropped_frames;
    c.values.model.textContent = cam.model_version ?? "–";
    if (document.activeElement !== c.threshold && cam.threshold !== null) c.threshold.placeholder = fmt(cam.threshold);
    c.threshold_value = cam.threshold;
  }
  for (const [id, c] of cards) if (!s.cameras.some((cam) => cam.id === id)) { c.root.remove(); cards.delete(id); }
}

async function refreshStatus() {
  try {
    const res = await fetch("/api/status", { cache: "no-store" });
    if (res.ok) renderStatus(await res.json());
  } catch { /* the daemon restarts; the next poll tries again */ }
}

function refreshImage(c, kind, seq) {
  const img = kind === "last" ? c.live : c.defect;
  img.src = "/api/cameras/" + encodeURIComponent(c.root.dataset.camera) + "/" + kind + ".jpg?seq=" + seq;
}

/** Runs \`apply\` now or when this image's interval has passed, whichever is later; the newest call wins. */
function throttled(c, kind, apply) {
  const t = c.images[kind];
  t.pending = apply;
  const fire = () => {
    clearTimeout(t.timer);
    t.timer = null;
    t.next = Date.now() + IMAGE_EVERY_MS;
    const f = t.pending;
    t.pending = null;
    if (f !== null) f();
  };
  const wait = t.next - Date.now();
  // a late timer can find its call already made by a direct fire, hence the null checks
  if (wait <= 0) fire();
  else if (t.timer === null) t.timer = setTimeout(fire, wait);
}

function onResult(r) {
  const c = card(r.camera);
  c.scores.push(r);
  if (c.scores.length > HISTORY) c.scores.shift();
  // an error verdict (a score that is not a number) is shown as such, never as a good frame
  c.score.textContent = r.verdict === "error" ? "error: no verdict" : fmt(r.score);
  c.score.className = "score" + (r.verdict === "ok" ? "" : " bad");
  c.root.classList.toggle("defect", r.verdict === "defect");
  c.root.classList.toggle("error", r.verdict === "error");
  throttled(c, "last", () => {
    refreshImage(c, "last", r.seq);
    c.root.querySelector("[data-role=last-caption]").textContent = "frame " + r.seq + (r.part_id ? " · part " + r.part_id : "");
  });
  if (r.verdict === "defect") {
    throttled(c, "defect", () => {
      refreshImage(c, "defect", r.seq);
      c.root.querySelector("[data-role=defect-caption]").textContent =
        "defect: frame " + r.seq + ", score " + fmt(r.score) + ", " + r.regions + " region" + (r.regions === 1 ? "" : "s");
    });
  }
  if (!c.drawn) { c.drawn = true; requestAnimationFrame(() => { c.drawn = false; draw(c); }); }
}

function draw(c) {
  const ctx = c.canvas.getContext("2d");
  const { width, height } = c.canvas;
  ctx.clearRect(0, 0, width, height);
  if (c.scores.length === 0) return;
  const threshold = c.scores[c.scores.length - 1].threshold;
  const top = Math.max(threshold * 1.5, ...c.scores.map((r) => r.score ?? 0)) || 1;
  const y = (v) => height - 4 - (v / top) * (height - 8);
  const x = (i) => (i / (HISTORY - 1)) * width;
  ctx.strokeStyle = "#e2a336"; ctx.setLineDash([6, 4]); ctx.beginPath();
  ctx.moveTo(0, y(threshold)); ctx.lineTo(width, y(threshold)); ctx.stroke(); ctx.setLineDash([]);
  ctx.strokeStyle = "#3b82f6"; ctx.lineWidth = 2; ctx.beginPath();
  // a null score (error verdict) is no point: the canvas skips a NaN coordinate
  const at = (r) => (r.score === null ? Number.NaN : y(r.score));
  c.scores.forEach((r, i) => (i === 0 ? ctx.moveTo(x(i), at(r)) : ctx.lineTo(x(i), at(r))));
  ctx.stroke();
  ctx.fillStyle = "#e5484d";
  c.scores.forEach((r, i) => { if (r.verdict === "defect") { ctx.beginPath(); ctx.arc(x(i), y(r.score), 3, 0, 7); ctx.fill(); } });
  // error verdicts: a red bar over the whole height, where the line has no point
  c.scores.forEach((r, i) => { if (r.verdict === "error") ctx.fillRect(x(i) - 1, 0, 2, height); });
}

function log(text, ok) {
  const item = el("li", { class: ok ? "ok" : "error" }, new Date().toLocaleTimeString() + "  " + text);
  $("log").prepend(item);
  while ($("log").children.length > 50) $("log").lastChild.remove();
}

function basic(user, password) {
  const bytes = new TextEncoder().encode(user + ":" + password);
  return "Basic " + btoa(String.fromCharCode(...bytes));
}

async function post(name, body) {
  const res = await fetch("/api/command/" + name, {
    method: "POST",
    headers: { "Content-Type": "application/json", Authorization: credentials.header, "X-Stpmd-Console": "1" },
    body: JSON.stringify(body),
  });
  if (res.status === 401) return { unauthorized: true };
  const type = res.headers.get("content-type") ?? "";
  return type.startsWith("application/json") ? res.json() : { status: "error", error: (await res.text()).trim() };
}

async function command(name, body) {
  if (credentials === null) { log(name + ": log in first", false); return; }
  try {
    const response = await post(name, body);
    if (response.unauthorized) { credentials = null; log(name + ": login refused; log in again", false); }
    else if (response.status === "ok") log(name + " " + JSON.stringify(body) + " → ok " + JSON.stringify(response.data), true);
    else log(name + " " + JSON.stringify(body) + " → " + response.error, false);
  } catch (err) { log(name + ": " + err.message, false); }
  await refreshStatus();
}

async function login(event) {
  event.preventDefault();
  const user = $("user").value;
  credentials = { user, header: basic(user, $("password").value) };
  const response = await post("status", {}).catch((err) => ({ status: "error", error: err.message }));
  if (response.unauthorized || response.status !== "ok") {
    credentials = null;
    log("login as " + user + " refused" + (response.error ? ": " + response.error : ""), false);
  } else {
    $("password").value = "";
    $("who").textContent = "operator " + user;
    $("who").hidden = false;
    $("logout").hidden = false;
    log("logged in as " + user, true);
  }
  await refreshStatus();
}

function logout() {
  credentials = null;
  $("who").hidden = true;
  $("logout").hidden = true;
  refreshStatus();
}

function connect() {
  const events = new EventSource("/api/events");
  const badge = $("stream");
  events.onopen = () => { badge.textContent = "live"; badge.className = "badge ok"; };
  events.onerror = () => { badge.textContent = "reconnecting"; badge.className = "badge warn"; };
  events.addEventListener("result", (e) => onResult(JSON.parse(e.data)));
  events.addEventListener("gap", (e) => log("missed " + JSON.parse(e.data).missed + " results (slow connection)", false));
}

document.addEventListener("DOMContentLoaded", () => {
  $("login").addEventListener("submit", login);
  $("logout").addEventListener("click", logout);
  $("collection").addEventListener("change", () => command("collection", { enabled: $("collection").checked }));
  $("reload").addEventListener("click", () => command("reload", {}));
  refreshStatus();
  setInterval(refreshStatus, 2000);
  connect();
});
`;

/** The console's static files by path. */
export const CONSOLE_ASSETS: Record<string, { type: string; body: string }> = {
  "/index.html": { type: "text/html; charset=utf-8", body: INDEX_HTML },
  "/console.js": { type: "text/javascript; charset=utf-8", body: CONSOLE_JS },
  "/console.css": { type: "text/css; charset=utf-8", body: CONSOLE_CSS },
};
