// horizond dashboard: live Overview and Metrics charts. Every page reads fine without this file.
(function () {
  "use strict";
  var base = document.body.getAttribute("data-base") || "";

  function duration(s) {
    if (s === null || s === undefined) return "–";
    if (s < 1) return Math.round(s * 1000) + " ms";
    if (s < 90) return s.toFixed(1) + " s";
    if (s < 5400) return Math.round(s / 60) + " min";
    if (s < 172800) return (s / 3600).toFixed(1) + " h";
    return (s / 86400).toFixed(1) + " d";
  }
  function cell(text) { var td = document.createElement("td"); td.textContent = text; return td; }
  function dash(v) { return v === null || v === undefined ? "–" : v; }

  function g(v, digits) { return v === null || v === undefined ? "–" : String(Number(Number(v).toPrecision(digits))); }
  function g4(v) { return g(v, 4); }
  function percent(v) { return v === null || v === undefined ? "–" : g4(v) + " %"; }
  function share(v) { return v === null || v === undefined ? "–" : g4(100 * v) + " %"; }
  var SLO_COLORS = {ok: "green", burning: "yellow", violated: "red"}, BR = {};
  function span(text, cls, title) {
    var s = document.createElement("span"); s.textContent = text;
    if (cls) s.className = cls; if (title) s.title = title; return s;
  }
  function td(parts, cls) {
    var c = document.createElement("td"); if (cls) c.className = cls;
    parts.forEach(function (p) {
      c.appendChild(p === BR ? document.createElement("br") : typeof p === "string" ? document.createTextNode(p) : p);
    });
    return c;
  }
  // The same cells as templates/slorows.html draws on the server.
  function sloState(r) {
    var color = SLO_COLORS[r.state] || "none";
    return td([span("", "dot " + color), span(r.state, "slo-state")], "slo-" + color);
  }
  function burn(r, name) {
    var b = r.burn_rate[name];
    return td([span(g(b.long, 3) + "x · " + g(b.short, 3) + "x", r.alerts.indexOf(name) >= 0 ? "alert" : "",
                    "over the last " + duration(b.long_seconds) + " and " + duration(b.short_seconds) +
                    "; alerts at " + g4(b.threshold) + "x in both"),
               BR, span("alert ≥ " + g4(b.threshold) + "x", "note")]);
  }
  function sloFull(r) {
    var o = r.objective, t = r.throughput, l = r.latency;
    var name = [r.queue]; if (r.pattern !== r.queue) name.push(BR, span(r.pattern, "note"));
    var through = [g4(t.achieved) + " of " + g4(t.offered)];
    if (t.keeps_up === false) through.push(" ", span("behind", "alert"));
    through.push(BR, span("target " + g4(t.target), "note"));
    return [td(name), sloState(r),
            td([g4(o.throughput) + "/min · ≤ " + duration(o.max_latency), BR,
                span(g4(o.success_rate) + " % over " + duration(o.window), "note")]),
            td([String(r.jobs)]), td([duration(l.p50)]), td([duration(l.p95)]), td([duration(l.p99)]),
            td([duration(l.max)]), td([share(r.over_max_latency)]), td([percent(r.success_rate)]),
            td([percent(r.good_rate)]), td([share(r.error_budget_remaining)]), burn(r, "fast"), burn(r, "slow"),
            td(through)];
  }
  function sloBrief(r) {
    var a = document.createElement("a"); a.href = base + "/slo"; a.textContent = r.queue;
    return [td([a]), sloState(r),
            td([duration(r.latency.p99) + " ", span("of ≤ " + duration(r.objective.max_latency), "note")]),
            td([percent(r.good_rate) + " ", span("of " + g4(r.objective.success_rate) + " %", "note")]),
            td([share(r.error_budget_remaining)]), td([r.alerts.join(", ") || "–"])];
  }
  var SLO_ORDER = {violated: 0, burning: 1, ok: 2};
  function worst(rows) {  // as the server's "worst" filter: worst first, 20 of them
    var rank = function (r) { return r.state in SLO_ORDER ? SLO_ORDER[r.state] : 3; };
    return rows.map(function (r, i) { return [rank(r), i, r]; })
      .sort(function (a, b) { return a[0] - b[0] || a[1] - b[1]; })
      .slice(0, 20).map(function (x) { return x[2]; });
  }
  function sloTable(id, rows, cells) {
    var body = document.querySelector("#" + id + " tbody");
    if (!body || !rows.length) return;  // the server's "none yet" row stays until there is one
    body.textContent = "";
    rows.forEach(function (r) {
      var tr = document.createElement("tr"); tr.setAttribute("data-queue", r.queue);
      cells(r).forEach(function (c) { tr.appendChild(c); });
      body.appendChild(tr);
    });
  }

  // Overview and Service levels: poll the JSON snapshot every 2 s; one request at a time, none
  // while the tab is hidden.
  function live() {
    var figures = document.getElementById("figures");
    if (!figures && !document.getElementById("slo")) return;
    var timer = null, busy = false;
    function schedule() { clearTimeout(timer); if (!document.hidden) timer = setTimeout(poll, 2000); }
    function poll() {
      if (busy || document.hidden) return;
      busy = true;
      fetch(base + "/api/snapshot", {credentials: "same-origin", headers: {"Accept": "application/json"}})
        .then(function (r) { return r.json(); })
        .then(render)
        .catch(function () {})
        .then(function () { busy = false; schedule(); });
    }
    function render(snap) {
      var badge = document.getElementById("health"), verdict = document.getElementById("slo-verdict");
      if (snap.health && badge) { badge.textContent = snap.health.status; badge.className = "badge " + snap.health.status; }
      var slo = snap.health && snap.health.indicators.filter(function (i) { return i.name === "slo"; })[0];
      if (slo && verdict) { verdict.textContent = slo.level; verdict.className = "badge " + slo.level; }
      if (snap.slo) { sloTable("slo", snap.slo.queues, sloFull); sloTable("slo-brief", worst(snap.slo.queues), sloBrief); }
      if (!snap.headline || !figures) return;
      var h = snap.headline;
      figures.querySelectorAll("[data-k]").forEach(function (el) {
        var v = h[el.getAttribute("data-k")];
        if (v && typeof v === "object") {
          el.textContent = el.getAttribute("data-k") === "highest_throughput" ? v.value + "/min" : duration(v.value);
        } else { el.textContent = dash(v); }
      });
      var body = document.querySelector("#workload tbody");
      body.textContent = "";
      snap.queues.forEach(function (q) {
        var tr = document.createElement("tr");
        [q.queue, q.pending, dash(q.processes), duration(q.estimated_wait), duration(q.oldest_job_age),
         dash(q.jobs_per_minute), q.failed].forEach(function (v) { tr.appendChild(cell(v)); });
        body.appendChild(tr);
      });
    }
    document.addEventListener("visibilitychange", function () { if (!document.hidden) poll(); else clearTimeout(timer); });
    schedule();
  }

  // Metrics: uPlot charts of the snapshots the page embeds (the table below them shows the same numbers).
  function charts() {
    var box = document.getElementById("charts");
    if (!box || typeof uPlot === "undefined") return;
    var s = JSON.parse(box.getAttribute("data-series"));
    if (!s.time.length) return;
    [["jobs_per_minute", "jobs per minute"], ["recent_runtime", "runtime (s)"], ["estimated_wait", "estimated wait (s)"],
     ["pending", "pending"]].forEach(function (pair) {
      var div = document.createElement("div");
      box.appendChild(div);
      new uPlot({title: pair[1], width: Math.min(900, box.clientWidth || 900), height: 180,
                 series: [{}, {label: pair[1], stroke: "#3b6fd8", width: 2}]},
                [s.time, s[pair[0]].map(function (v) { return v === null ? null : Number(v); })], div);
    });
  }

  live();
  charts();
})();
