// The store edge agent's page: Store, Live events, Exit detail and Floor walk (docs/web.md).
// No framework, no CDN: everything it needs is served by the agent itself.
"use strict";

let me = null;          // {session, role, csrf, expires}
let live = [];          // EventSources and timers of the current page; closed when it changes
const main = () => document.getElementById("main");

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (v !== null && v !== undefined && v !== false) el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat(Infinity)) {
    if (c !== null && c !== undefined) el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

function show(...nodes) { main().replaceChildren(...nodes.flat(Infinity).filter((n) => n !== null && n !== undefined)); }
function badge(text, cls) { return h("span", { class: "badge " + (cls || text) }, text); }
function when(t) {
  if (!t) return "never";
  const d = typeof t === "number" ? new Date(t * 1000) : new Date(t);
  return d.toLocaleString([], { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
}
function ms(v) { return v === null || v === undefined ? "" : v < 10000 ? `${Math.round(v)} ms` : `${(v / 1000).toFixed(1)} s`; }

async function api(path, body) {
  const opts = body === undefined ? {} : {
    method: "POST", body: JSON.stringify(body),
    headers: { "Content-Type": "application/json", "X-CSRF-Token": me ? me.csrf : "" },
  };
  const r = await fetch(path, { credentials: "same-origin", ...opts });
  const data = await r.json().catch(() => ({ error: r.statusText }));
  if (!r.ok) throw Object.assign(new Error(data.error || r.statusText), { status: r.status });
  return data;
}

function stream(url, onItem) {
  const es = new EventSource(url);
  es.onmessage = (m) => onItem(JSON.parse(m.data));
  live.push({ close: () => es.close() });
  return es;
}

function closeLive() { for (const l of live) l.close(); live = []; }

// -- pairing --------------------------------------------------------------------------------

function notPaired(message) {
  document.getElementById("nav").hidden = true;
  show(h("h2", {}, "This phone is not paired"),
       h("p", {}, message || "Ask the technician to run `agent web pair` on the store's Pi and scan the QR code it prints."));
}

async function pair(code) {
  history.replaceState(null, "", "/#store");  // the code is used once; keep it out of history
  try {
    me = await api("/api/pair", { code });
  } catch (err) {
    return notPaired(err.message);
  }
  route();
}

// -- Store ------------------------------------------------------------------------------------

function healthCard(status) {
  const b = status.broker, buf = status.buffer;
  const rows = [
    h("div", { class: "row" }, h("span", {}, "Broker ", h("span", { class: "muted" }, b.host)),
      badge(b.connected ? "connected" : "disconnected", b.connected ? "ok" : "bad")),
    !b.connected && b.last_error ? h("div", { class: "muted" }, b.last_error) : null,
    h("div", { class: "row" }, h("span", {}, `Buffer: ${buf.depth} events waiting`),
      badge(buf.storage === "ok" ? "ok" : "cannot write", buf.storage === "ok" ? "ok" : "bad")),
    buf.storage !== "ok" ? h("div", { class: "muted" }, buf.storage) : null,
    h("div", { class: "row" }, h("span", {}, "Clock"),
      badge(status.clocksynced ? "synced" : "not synced", status.clocksynced ? "ok" : "warn")),
  ];
  const host = status.host || {};  // agent status's host health (agent/health.py)
  const facts = [];
  if (host.board) facts.push(host.board);
  if (host.cpu_temp_c !== null && host.cpu_temp_c !== undefined) facts.push(`CPU ${host.cpu_temp_c.toFixed(0)} °C`);
  if (host.disk) facts.push(`disk ${(host.disk.free_bytes / 2 ** 30).toFixed(1)} GiB free`);
  if (facts.length) rows.push(h("div", { class: "muted" }, "Pi: " + facts.join(", ")));
  for (const w of host.warnings || []) rows.push(h("div", { class: "error" }, w));
  return h("div", { class: "card", id: "health" }, rows);
}

async function pageStore() {
  const s = await api("/api/store");
  document.getElementById("store-name").textContent = `Store ${s.status.storeid}`;
  const exits = Object.entries(s.exits).map(([name, ex]) => {
    const last = ex.last_selftest || {};
    return h("div", { class: "card exit", "data-exit": name },
      h("div", { class: "row" }, h("a", { class: "title", href: `#exit/${name}` }, name),
        last.running ? badge("running", "warn") : badge(last.result || "never")),
      h("div", { class: "muted" }, last.result ? `last self-test ${when(last.finished)} (${last.trigger}): ${last.summary}` : "no self-test yet"));
  });
  const devices = Object.entries(s.status.devices).map(([id, d]) =>
    h("div", { class: "card device", "data-device": id },
      h("div", { class: "row" }, h("span", {}, id, " ", h("span", { class: "muted" }, d.driver)),
        badge(d.online ? "online" : d.finished ? "finished" : "offline", d.online || d.finished ? "online" : "offline")),
      !d.online && !d.finished ? h("div", { class: "muted" }, (d.state && d.state.reason) || "not connected yet") : null));
  show(h("h2", {}, "Exits"), exits.length ? exits : h("p", { class: "muted" }, "No exits configured."),
       h("h2", {}, "Health"), healthCard(s.status),
       h("h2", {}, "Devices"), devices);
  live.push({ close: clearTimeout.bind(null, setTimeout(() => current() === "store" && route(), 5000)) });
}

// -- Live events --------------------------------------------------------------------------------

async function pageEvents(exit) {
  const s = await api("/api/store");
  const select = h("select", { id: "exit-filter", onchange: (e) => { location.hash = e.target.value ? `#events/${e.target.value}` : "#events"; } },
    h("option", { value: "" }, "All exits and devices"),
    Object.keys(s.exits).map((n) => h("option", { value: n, selected: n === exit }, `Exit ${n}`)));
  const list = h("div", { id: "events" });
  const lost = h("p", { class: "muted", id: "lost" });
  show(h("h2", {}, "Live events"), select, lost, list);
  stream(`/api/events${exit ? `?exit=${encodeURIComponent(exit)}` : ""}`, (e) => {
    const d = e.data || {};
    const detail = Object.entries(d).filter(([k]) => !["raw", "run_id", "exit"].includes(k)).map(([k, v]) => `${k}=${typeof v === "object" ? JSON.stringify(v) : v}`).join(" ");
    list.prepend(h("div", { class: "event" + (e.test ? " is-test" : ""), "data-type": e.type, "data-test": String(!!e.test) },
      h("div", { class: "row" }, h("strong", {}, e.type), e.test ? badge("TEST", "test") : null),
      h("div", { class: "muted" }, `${new Date(e.time).toLocaleTimeString()} · ${e.deviceid}${e.subject ? " · " + e.subject : ""} · #${e.seq}`),
      detail ? h("div", { class: "muted" }, detail) : null));
    while (list.childElementCount > 200) list.lastChild.remove();
  }).addEventListener("lost", (m) => { lost.textContent = `${m.data} events were not shown (this page fell behind).`; });
}

// -- a run (self-test or walk test) streamed to the page -------------------------------------------

function runView(run, done) {
  const steps = h("div", { id: "steps" });
  const prompt = h("div", { id: "prompt" });
  const stop = h("button", { class: "secondary", id: "stop", onclick: () => api(`/api/runs/${run.id}/cancel`, {}) }, "Stop");
  const view = h("div", {}, prompt, stop, steps);
  stream(`/api/runs/${run.id}/stream`, (item) => {
    // Newest first: on a phone the latest result stays right under the instruction.
    if (item.kind === "started") {
      steps.prepend(h("h2", {}, `Exit ${item.exit}: ${item.walk ? "walk test" : "self-test"}`));
    } else if (item.kind === "prompt") {
      const reason = h("input", { type: "text", id: "cannot-reason", placeholder: "Why not? (e.g. exit blocked)" });
      const cannot = () => reason.value.trim() && api(`/api/runs/${run.id}/note`, { reason: reason.value.trim() })
        .then(() => { reason.disabled = true; }).catch((err) => { reason.value = err.message; });
      prompt.replaceChildren(h("div", { class: "prompt" }, item.text),
        h("div", { class: "cannot" }, reason, h("button", { class: "secondary", id: "cannot", onclick: cannot }, "Can't do this step")));
    } else if (item.kind === "note") {
      steps.prepend(h("div", { class: "step", "data-note": item.exit },
        h("strong", {}, "not possible"), badge("note", "warn"),
        h("div", { class: "detail" }, `${item.instruction} ${item.reason}`)));
    } else if (item.kind === "question") {
      const answer = (a) => { prompt.replaceChildren(); api(`/api/runs/${run.id}/answer`, { answer: a }); };
      prompt.replaceChildren(h("div", { class: "prompt" }, item.text.replace(/\s*\[y\/n\]$/, "")),
        h("div", { class: "answers" }, h("button", { onclick: () => answer("y") }, "Yes"),
          h("button", { class: "secondary", onclick: () => answer("n") }, "No")));
    } else if (item.kind === "step") {
      const result = item.warning ? "warn" : item.result;
      steps.prepend(h("div", { class: "step", "data-step": item.step, "data-result": item.result },
        h("strong", {}, item.step), h("span", {}, ms(item.latency_ms), " ", badge(result)),
        h("div", { class: "detail" }, item.detail)));
      if (item.step.startsWith("walk")) prompt.replaceChildren();
    } else if (item.kind === "finished") {
      const r = item.report;
      steps.prepend(h("div", { class: "card", "data-finished": r.exit }, h("div", { class: "row" }, h("strong", {}, `Exit ${r.exit}`), badge(r.result)),
        h("div", { class: "muted" }, r.summary)));
    } else if (item.kind === "end") {
      closeLive();
      prompt.replaceChildren();
      stop.remove();
      done(item.run);
    }
  });
  return view;
}

function downloads(run) {
  if (!Object.keys(run.results).length) return h("p", { class: "error" }, run.error || "no report");
  return h("div", { id: "downloads" },
    h("a", { class: "button", href: `/api/runs/${run.id}/report.json`, download: `selftest-${run.id}.json` }, "Download report (JSON)"),
    h("a", { class: "button secondary", href: `/api/runs/${run.id}/report.xml`, download: `selftest-${run.id}.xml` }, "Download report (JUnit)"));
}

async function startRun(exits, walk, area) {
  let run;
  try {
    run = await api("/api/runs", { exits, walk });
  } catch (err) {
    return area.replaceChildren(h("p", { class: "error" }, err.message));
  }
  area.replaceChildren(runView(run, (end) => {
    area.prepend(h("div", { class: "card", id: "result" }, h("div", { class: "row" }, h("strong", {}, walk ? "Floor walk finished" : "Self-test finished"),
      end.error ? badge(end.error, "fail") : null)), downloads(end));
  }));
}

// -- Exit detail --------------------------------------------------------------------------------

function reportSteps(report) {
  return report.steps.map((s) => h("div", { class: "step", "data-result": s.result },
    h("strong", {}, s.step), h("span", {}, ms(s.latency_ms), " ", badge(s.warning ? "warn" : s.result)),
    h("div", { class: "detail" }, s.detail)));
}

async function pageExit(name) {
  const x = await api(`/api/exits/${encodeURIComponent(name)}`);
  const devices = Object.entries(x.devices).map(([role, d]) => h("div", { class: "row card" },
    h("span", {}, `${role}: ${d.id}`), badge(d.online ? "online" : "offline")));
  const area = h("div", { id: "run" });
  const operator = me.role === "operator";
  const last = x.last_report;
  show(h("h2", {}, `Exit ${name}`), devices,
    operator ? h("button", { id: "run-selftest", onclick: () => startRun([name], false, area) }, "Run self-test")
      : h("p", { class: "muted" }, "Viewers see; an operator can run a self-test here."),
    area,
    h("h2", {}, "Last report"),
    last ? [h("div", { class: "row" }, h("span", { class: "muted" }, `${when(last.finished)} (${last.trigger})`), badge(last.result)),
      reportSteps(last),
      h("a", { class: "button secondary", href: `/api/exits/${name}/report.json`, download: true }, "Download (JSON)"),
      h("a", { class: "button secondary", href: `/api/exits/${name}/report.xml`, download: true }, "Download (JUnit)")]
      : h("p", { class: "muted" }, "No self-test yet."));
}

// -- Floor walk ---------------------------------------------------------------------------------

async function pageWalk() {
  const s = await api("/api/store");
  if (me.role !== "operator") {
    return show(h("h2", {}, "Floor walk"), h("p", { class: "muted" }, "A floor walk needs an operator's pairing (`agent web pair --role operator`)."));
  }
  const boxes = Object.keys(s.exits).map((n) => h("label", { class: "check" }, h("input", { type: "checkbox", value: n, checked: true }), `Exit ${n}`));
  const area = h("div", { id: "run" });
  const start = h("button", { id: "start-walk", onclick: () => {
    const exits = boxes.map((b) => b.firstChild).filter((i) => i.checked).map((i) => i.value);
    chooser.remove();
    startRun(exits, true, area);
  } }, "Start floor walk");
  const chooser = h("div", {}, h("p", { class: "muted" }, "Take the test tag. The page tells you what to do at each exit and shows what the pedestal saw. Leaving this page stops the walk."), boxes, start);
  show(h("h2", {}, "Floor walk"), chooser, area);
}

// -- routing ------------------------------------------------------------------------------------

function current() { return (location.hash.slice(1) || "store").split("/")[0]; }

async function route() {
  closeLive();
  const hash = location.hash.slice(1);
  if (hash.startsWith("pair=")) return pair(hash.slice(5));
  if (!me) {
    try { me = await api("/api/me"); } catch (err) { return notPaired(err.status === 401 ? null : err.message); }
  }
  document.getElementById("nav").hidden = false;
  document.getElementById("footer").textContent = `session ${me.session} · ${me.role}`;
  const [page, arg] = [current(), hash.split("/").slice(1).join("/")];
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("on", a.dataset.page === page);
  try {
    if (page === "events") await pageEvents(arg);
    else if (page === "exit") await pageExit(arg);
    else if (page === "walk") await pageWalk();
    else await pageStore();
  } catch (err) {
    if (err.status === 401) { me = null; return notPaired(err.message); }
    show(h("p", { class: "error" }, err.message));
  }
}

window.addEventListener("hashchange", route);
window.addEventListener("pagehide", closeLive);
route();
