// The lockd status page: polls /locks.json and /history.json and builds
// the DOM with createElement and textContent only. Lock and client names
// are arbitrary bytes chosen by clients: never parse them as HTML.
"use strict";

const POLL_MS = 2000;
const PAGE_SIZE = 100;
const LONG_HOLD_MS = 60000;
const state = { offset: 0, filter: "", sort: "name", timer: null };

function $(id) { return document.getElementById(id); }

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function duration(ms) {
  if (ms < 1000) return ms + " ms";
  const s = Math.floor(ms / 1000);
  if (s < 60) return (ms / 1000).toFixed(1) + " s";
  const m = Math.floor(s / 60);
  if (m < 60) return m + " m " + (s % 60) + " s";
  const h = Math.floor(m / 60);
  if (h < 48) return h + " h " + (m % 60) + " m";
  return Math.floor(h / 24) + " d " + (h % 24) + " h";
}

function seconds(v) {
  if (v === null || v === undefined) return "–";
  if (v < 0.001) return (v * 1e6).toFixed(0) + " µs";
  if (v < 1) return (v * 1000).toFixed(1) + " ms";
  return v.toFixed(2) + " s";
}

// A client: the registered name, then the default name (IP:PORT, unix:N).
function client(registered, fallback) {
  const span = el("span", null, "client");
  if (registered !== null && registered !== undefined && registered !== fallback) {
    span.appendChild(el("span", registered, "registered"));
    span.appendChild(document.createTextNode(" "));
    span.appendChild(el("span", "(" + fallback + ")", "default"));
  } else {
    span.appendChild(el("span", fallback, "registered"));
  }
  return span;
}

function list(tag, items, render) {
  const node = document.createElement(tag);
  for (const item of items) {
    const li = document.createElement("li");
    li.appendChild(render(item));
    node.appendChild(li);
  }
  return node;
}

function sortEntries(entries, held, waiters) {
  if (state.sort === "held") entries.sort((a, b) => held(b[1]) - held(a[1]));
  else if (state.sort === "waiters") entries.sort((a, b) => waiters(b[1]) - waiters(a[1]));
  else entries.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  return entries;
}

// Read-held locks have no writer: they join the exclusive table with
// their readers listed, and the longest read hold as their held time.
function withReaders(exclusive, readers) {
  const all = Object.assign({}, exclusive);
  for (const [name, lock] of Object.entries(readers)) {
    all[name] = {
      holder: "", name: null, token: "",
      readers: lock.holders, waiters: lock.waiters,
      held_ms: Math.max(0, ...(lock.held_ms || [])),
    };
  }
  return all;
}

function renderExclusive(locks) {
  const body = $("exclusive").querySelector("tbody");
  const rows = document.createDocumentFragment();
  const entries = sortEntries(Object.entries(locks), l => l.held_ms || 0, l => l.waiters.length);
  for (const [name, lock] of entries) {
    const tr = document.createElement("tr");
    tr.dataset.kind = "exclusive";
    tr.appendChild(el("td", name, "name"));
    const holder = el("td");
    holder.appendChild(client(lock.name, lock.holder));
    tr.appendChild(holder);
    tr.appendChild(el("td", duration(lock.held_ms || 0), "num held" + (lock.held_ms >= LONG_HOLD_MS ? " long" : "")));
    tr.appendChild(el("td", lock.token, "num"));
    const readers = el("td");
    if (Array.isArray(lock.readers) && lock.readers.length > 0) {
      readers.appendChild(list("ul", lock.readers, r => el("span", typeof r === "string" ? r : r.client)));
    }
    tr.appendChild(readers);
    const waiters = el("td", null, "waiters");
    if (lock.waiters.length > 0) waiters.appendChild(list("ol", lock.waiters, w => el("span", typeof w === "string" ? w : w.client)));
    tr.appendChild(waiters);
    rows.appendChild(tr);
  }
  body.replaceChildren(rows);
  $("exclusive-empty").hidden = entries.length > 0;
}

function renderShared(locks) {
  const body = $("shared").querySelector("tbody");
  const rows = document.createDocumentFragment();
  const longest = l => Math.max(0, ...(l.held_ms || []));
  const entries = sortEntries(Object.entries(locks), longest, l => l.waiters.length);
  for (const [name, lock] of entries) {
    const tr = document.createElement("tr");
    tr.dataset.kind = "shared";
    tr.appendChild(el("td", name, "name"));
    const holders = el("td");
    holders.appendChild(list("ul", lock.holders.map((h, i) => [h, i]), ([h, i]) => {
      const span = el("span");
      span.appendChild(client((lock.holder_names || [])[i], h));
      const ms = (lock.held_ms || [])[i] || 0;
      span.appendChild(el("span", " " + duration(ms), ms >= LONG_HOLD_MS ? "long" : "default"));
      return span;
    }));
    tr.appendChild(holders);
    const fill = el("td", null, "num");
    const limit = lock.waiters.length > 0 ? lock.waiters[0].limit : 0;
    if (limit > 0) {
      const bar = el("span", null, "bar" + (lock.holders.length >= limit ? " full" : ""));
      const inner = el("span");
      inner.style.width = Math.min(100, (100 * lock.holders.length) / limit) + "%";
      bar.appendChild(inner);
      fill.appendChild(bar);
      fill.appendChild(document.createTextNode(lock.holders.length + " / " + limit));
    } else {
      fill.textContent = lock.holders.length + (lock.holders.length === 1 ? " holder" : " holders");
    }
    tr.appendChild(fill);
    const waiters = el("td", null, "waiters");
    if (lock.waiters.length > 0) {
      waiters.appendChild(list("ol", lock.waiters, w => el("span", w.client + " (limit " + (w.limit === 0 ? "none" : w.limit) + ")")));
    }
    tr.appendChild(waiters);
    rows.appendChild(tr);
  }
  body.replaceChildren(rows);
  $("shared-empty").hidden = entries.length > 0;
}

function renderHeader(data) {
  const s = data.server || {};
  $("version").textContent = s.version || "";
  $("connections").textContent = s.connections + " / " + s.max_connections;
  $("locks").textContent = data.counts.exclusive;
  $("shared-locks").textContent = data.counts.shared;
  $("waiting").textContent = s.waiting;
  $("uptime").textContent = duration((s.uptime_seconds || 0) * 1000);
  const most = Math.max(data.counts.exclusive_matched, data.counts.shared_matched);
  const first = most === 0 ? 0 : state.offset + 1;
  const last = Math.min(state.offset + PAGE_SIZE, most);
  $("range").textContent = "showing " + first + "–" + last + " of " + most +
    " matching (" + data.counts.exclusive_matched + " exclusive, " + data.counts.shared_matched + " shared)";
  $("prev").disabled = state.offset === 0;
  $("next").disabled = state.offset + PAGE_SIZE >= most;
}

function drawChart(history) {
  const canvas = $("chart");
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height, pad = 34;
  ctx.clearRect(0, 0, w, h);
  ctx.font = "11px system-ui, sans-serif";
  ctx.strokeStyle = "#d8dee4";
  ctx.strokeRect(pad, 8, w - 2 * pad, h - pad);
  const points = history.points || [];
  if (points.length < 2) {
    ctx.fillStyle = "#5f6b77";
    ctx.fillText("collecting samples…", pad + 8, h / 2);
    return;
  }
  const t0 = points[0].t, t1 = points[points.length - 1].t;
  const x = t => pad + ((t - t0) / Math.max(1, t1 - t0)) * (w - 2 * pad);
  const maxRate = Math.max(1, ...points.map(p => p.grants_per_s));
  const waits = points.flatMap(p => [p.p50, p.p90, p.p99]).filter(v => v !== null);
  const maxWait = Math.max(0.001, ...waits);
  const yRate = v => 8 + (h - pad) * (1 - v / maxRate);
  const yWait = v => 8 + (h - pad) * (1 - v / maxWait);
  function line(color, value, y) {
    ctx.strokeStyle = color;
    ctx.lineWidth = 1.5;
    ctx.beginPath();
    let open = false;
    for (const p of points) {
      const v = value(p);
      if (v === null || v === undefined) { open = false; continue; }
      if (open) ctx.lineTo(x(p.t), y(v)); else ctx.moveTo(x(p.t), y(v));
      open = true;
    }
    ctx.stroke();
  }
  line("#0b62c4", p => p.grants_per_s, yRate);
  line("#2e9e44", p => p.p50, yWait);
  line("#d08c00", p => p.p90, yWait);
  line("#c0392b", p => p.p99, yWait);
  ctx.fillStyle = "#0b62c4";
  ctx.fillText(maxRate.toFixed(1) + "/s", 2, 16);
  ctx.fillStyle = "#c0392b";
  const label = seconds(maxWait);
  ctx.fillText(label, w - ctx.measureText(label).width - 2, 16);
  ctx.fillStyle = "#5f6b77";
  ctx.fillText(Math.round((t1 - t0) / 60000) + " min", pad, h - 8);
  ctx.fillText("now", w - pad - 20, h - 8);
}

async function fetchJson(path) {
  const response = await fetch(path, { credentials: "same-origin", cache: "no-store" });
  if (!response.ok) throw new Error(path + ": HTTP " + response.status);
  return response.json();
}

async function refresh() {
  const query = new URLSearchParams({
    match: state.filter, sort: state.sort, offset: String(state.offset), limit: String(PAGE_SIZE),
  });
  try {
    const [locks, history] = await Promise.all([fetchJson("locks.json?" + query), fetchJson("history.json")]);
    renderHeader(locks);
    renderExclusive(withReaders(locks.exclusive, locks.readers || {}));
    renderShared(locks.shared);
    drawChart(history);
    $("status").className = "";
    $("status").textContent = "updated " + new Date().toLocaleTimeString();
  } catch (e) {
    $("status").className = "error";
    $("status").textContent = "cannot update: " + e.message;
  }
}

function schedule() {
  clearTimeout(state.timer);
  refresh().finally(() => { state.timer = setTimeout(schedule, POLL_MS); });
}

document.addEventListener("DOMContentLoaded", () => {
  let typing = null;
  $("filter").addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(() => { state.filter = $("filter").value; state.offset = 0; schedule(); }, 250);
  });
  $("sort").addEventListener("change", () => { state.sort = $("sort").value; state.offset = 0; schedule(); });
  $("prev").addEventListener("click", () => { state.offset = Math.max(0, state.offset - PAGE_SIZE); schedule(); });
  $("next").addEventListener("click", () => { state.offset += PAGE_SIZE; schedule(); });
  schedule();
});
