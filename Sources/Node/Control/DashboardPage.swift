/// The page and script of `/dashboard`, served from the binary (nothing to install, nothing
/// fetched from elsewhere). Everything a worker or a peer supplied (model ids, URLs, names) is
/// put on the page as text, never as markup.
enum DashboardPage {
    static let html = #"""
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>smg dashboard</title>
<style>
  :root { --bg: #f6f7f9; --card: #fff; --text: #1d2330; --muted: #667085; --line: #e4e7ec;
          --ok: #12805c; --okbg: #e3f5ec; --warn: #9a6700; --warnbg: #fff4d6; --bad: #b42318; --badbg: #fde8e6; }
  @media (prefers-color-scheme: dark) {
    :root { --bg: #12151b; --card: #1b1f27; --text: #e6e8ec; --muted: #98a2b3; --line: #2b313c;
            --okbg: #10392b; --ok: #5fd3a4; --warnbg: #3d3110; --warn: #f5c451; --badbg: #4a1a16; --bad: #ff8a7a; }
  }
  * { box-sizing: border-box; }
  body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; background: var(--bg); color: var(--text); }
  header { display: flex; flex-wrap: wrap; gap: 8px 16px; align-items: baseline; padding: 14px 18px; border-bottom: 1px solid var(--line); background: var(--card); }
  header h1 { font-size: 18px; margin: 0; }
  header .muted { color: var(--muted); }
  main { padding: 16px 18px 32px; max-width: 1280px; margin: 0 auto; }
  .cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(150px, 1fr)); gap: 10px; margin-bottom: 18px; }
  .card { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 10px 12px; }
  .card .label { color: var(--muted); font-size: 12px; }
  .card .value { font-size: 22px; font-weight: 600; font-variant-numeric: tabular-nums; }
  section { background: var(--card); border: 1px solid var(--line); border-radius: 8px; margin-bottom: 18px; }
  section h2 { font-size: 15px; margin: 0; padding: 10px 12px; border-bottom: 1px solid var(--line); }
  .scroll { overflow-x: auto; }
  table { border-collapse: collapse; width: 100%; }
  th, td { text-align: left; padding: 7px 12px; border-bottom: 1px solid var(--line); white-space: nowrap; font-variant-numeric: tabular-nums; }
  th { color: var(--muted); font-weight: 500; font-size: 12px; }
  tr:last-child td { border-bottom: none; }
  .pill { display: inline-block; padding: 1px 8px; border-radius: 999px; font-size: 12px; font-weight: 600; }
  .ok { color: var(--ok); background: var(--okbg); }
  .warn { color: var(--warn); background: var(--warnbg); }
  .bad { color: var(--bad); background: var(--badbg); }
  .banner { display: none; padding: 10px 18px; }
  .banner.shown { display: block; }
  .empty { color: var(--muted); padding: 10px 12px; }
  form { display: flex; gap: 8px; flex-wrap: wrap; padding: 10px 12px; }
  input { font: inherit; padding: 6px 8px; border: 1px solid var(--line); border-radius: 6px; min-width: 260px; background: var(--bg); color: var(--text); }
  button { font: inherit; padding: 6px 12px; border-radius: 6px; border: 1px solid var(--line); background: var(--card); color: var(--text); cursor: pointer; }
</style>
</head>
<body>
<header>
  <h1>smg <span id="router">…</span></h1>
  <span id="state" class="pill warn">loading</span>
  <span class="muted">policy <span id="policy">–</span> · up <span id="uptime">–</span> · updated <span id="updated">never</span></span>
</header>
<div id="down" class="banner bad" role="alert"></div>
<main>
  <section id="auth" hidden>
    <h2>This router needs a key with the read role</h2>
    <form id="auth-form">
      <input id="key" type="password" autocomplete="off" placeholder="API key or JWT" aria-label="API key or JWT">
      <button type="submit">Use</button>
    </form>
  </section>
  <div class="cards">
    <div class="card"><div class="label">Requests / s</div><div class="value" id="rps">–</div></div>
    <div class="card"><div class="label">Server errors / s</div><div class="value" id="eps">–</div></div>
    <div class="card"><div class="label">Cache hit ratio</div><div class="value" id="hits">–</div></div>
    <div class="card"><div class="label">In flight</div><div class="value" id="inflight">–</div></div>
    <div class="card"><div class="label">Queued</div><div class="value" id="queued">–</div></div>
    <div class="card"><div class="label">Rate limit (tokens/s)</div><div class="value" id="share">–</div></div>
    <div class="card"><div class="label">History</div><div class="value" id="history">–</div></div>
    <div class="card"><div class="label">Mesh members alive</div><div class="value" id="alive">–</div></div>
  </div>
  <section id="mesh-section">
    <h2>Mesh</h2>
    <div class="scroll"><table>
      <thead><tr><th>Router</th><th>Address</th><th>Status</th><th>Last contact</th><th>Writes behind</th><th>Last digest</th></tr></thead>
      <tbody id="members"></tbody>
    </table></div>
    <div id="mesh-off" class="empty" hidden>The mesh is off on this router (--enable-mesh).</div>
  </section>
  <section>
    <h2>Workers</h2>
    <div class="scroll"><table>
      <thead><tr><th>Worker</th><th>Model</th><th>Type</th><th>Health</th><th>Breaker</th><th>In flight here</th><th>In flight, all routers</th><th>Reported load</th></tr></thead>
      <tbody id="workers"></tbody>
    </table></div>
    <div id="no-workers" class="empty" hidden>No workers registered.</div>
  </section>
</main>
<script src="/dashboard.js"></script>
</body>
</html>
"""#

    static let script = #"""
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  let key = sessionStorage.getItem("smg-dashboard-key") || "";
  let downSince = null;

  async function get(path) {
    const headers = key ? { Authorization: "Bearer " + key } : {};
    const r = await fetch(path, { headers, cache: "no-store" });
    if (r.status === 401 || r.status === 403) { $("auth").hidden = false; throw new Error("unauthorized"); }
    if (r.status === 404) return null;
    if (!r.ok) throw new Error(path + " answered " + r.status);
    return r.json();
  }

  function text(v) { return v === null || v === undefined ? "–" : String(v); }
  function fixed(v, digits) { return typeof v === "number" ? v.toFixed(digits) : "–"; }
  function ago(ms) { return typeof ms === "number" ? (ms < 1000 ? ms + " ms" : (ms / 1000).toFixed(1) + " s") + " ago" : "–"; }
  function duration(s) {
    if (typeof s !== "number") return "–";
    if (s < 120) return s + " s";
    if (s < 7200) return Math.floor(s / 60) + " min";
    return Math.floor(s / 3600) + " h";
  }
  function pill(value, kind) {
    const span = document.createElement("span");
    span.className = "pill " + kind;
    span.textContent = value;
    return span;
  }
  function row(cells, attributes) {
    const tr = document.createElement("tr");
    for (const [name, value] of Object.entries(attributes || {})) tr.setAttribute(name, value);
    for (const c of cells) {
      const td = document.createElement("td");
      if (c instanceof Node) td.appendChild(c); else td.textContent = text(c);
      tr.appendChild(td);
    }
    return tr;
  }
  const memberKind = { alive: "ok", suspect: "warn" };

  function showStats(s) {
    $("router").textContent = s.router;
    $("policy").textContent = s.policy;
    $("uptime").textContent = duration(s.uptime_seconds);
    const state = $("state");
    state.textContent = s.draining ? "draining" : "serving";
    state.className = "pill " + (s.draining ? "warn" : "ok");
    const r = s.rates || {};
    $("rps").textContent = fixed(r.requests_per_second, 1);
    $("eps").textContent = fixed(r.server_errors_per_second, 2);
    $("hits").textContent = typeof r.cache_hit_ratio === "number" ? (r.cache_hit_ratio * 100).toFixed(1) + " %" : "–";
    $("inflight").textContent = text(s.in_flight);
    $("queued").textContent = text(s.admission.queued);
    $("share").textContent = typeof s.admission.rate_limit_tokens_per_second === "number" ? s.admission.rate_limit_tokens_per_second.toFixed(1) : "none";
    $("history").textContent = s.history.backend;
  }

  function showMesh(m) {
    const body = $("members");
    body.replaceChildren();
    $("mesh-off").hidden = m !== null;
    if (m === null) { $("alive").textContent = "off"; return; }
    $("alive").textContent = text(m.alive);
    body.appendChild(row([m.name + " (this router)", m.address, pill(m.status, memberKind[m.status] || "bad"), "–", "–", "–"],
                         { "data-member": m.name, "data-status": m.status }));
    for (const p of m.members) {
      body.appendChild(row([p.name, p.address, pill(p.status, memberKind[p.status] || "bad"), ago(p.last_contact_ms), text(p.lag_writes), ago(p.last_digest_ms)],
                           { "data-member": p.name, "data-status": p.status }));
    }
  }

  function showWorkers(w) {
    const body = $("workers");
    body.replaceChildren();
    const list = (w && w.workers) || [];
    $("no-workers").hidden = list.length > 0;
    for (const x of list) {
      const health = x.is_draining ? pill("draining", "warn") : pill(x.health, x.health === "healthy" ? "ok" : (x.health === "unknown" ? "warn" : "bad"));
      const breaker = pill(x.circuit_breaker, x.circuit_breaker === "closed" ? "ok" : (x.circuit_breaker === "open" ? "bad" : "warn"));
      body.appendChild(row([x.url, x.model_id, x.worker_type, health, breaker, x.router_load, x.load, x.reported_load],
                           { "data-worker": x.url, "data-health": x.health }));
    }
  }

  async function refresh() {
    let stats, workers, mesh;
    try {
      [stats, workers, mesh] = await Promise.all([get("/dashboard/stats"), get("/workers"), get("/ha/status")]);
    } catch (e) {
      if (e.message === "unauthorized") return;
      downSince = downSince || new Date();
      const banner = $("down");
      banner.textContent = "This router does not answer since " + downSince.toLocaleTimeString() + ": open the dashboard of another router of the cluster.";
      banner.classList.add("shown");
      const state = $("state");
      state.textContent = "unreachable";
      state.className = "pill bad";
      return;
    }
    // Outside the try: a fault in drawing is the script's, reported as such (not as a router down).
    $("auth").hidden = true;
    showStats(stats);
    showWorkers(workers);
    showMesh(mesh);
    downSince = null;
    $("down").classList.remove("shown");
    $("updated").textContent = new Date().toLocaleTimeString();
  }

  // A failure of this script or a refusal by the page's security policy is shown, not only
  // logged to a console nobody opens (and the browser test reads the mark).
  function scriptFailed(message) {
    document.body.setAttribute("data-script-error", message);
    const banner = $("down");
    banner.textContent = "The dashboard failed: " + message;
    banner.classList.add("shown");
  }
  window.addEventListener("error", (e) => scriptFailed(String(e.message)));
  window.addEventListener("unhandledrejection", (e) => scriptFailed(String(e.reason)));
  document.addEventListener("securitypolicyviolation", (e) => scriptFailed("blocked by the page's policy: " + e.violatedDirective + " " + e.blockedURI));

  $("auth-form").addEventListener("submit", (event) => {
    event.preventDefault();
    key = $("key").value.trim();
    sessionStorage.setItem("smg-dashboard-key", key);
    refresh();
  });
  refresh();
  setInterval(refresh, 2000);
})();
"""#
}
