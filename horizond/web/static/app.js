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

  // Overview: poll the JSON snapshot every 2 s; one request at a time, none while the tab is hidden.
  function live() {
    var figures = document.getElementById("figures");
    if (!figures) return;
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
      var badge = document.getElementById("health");
      if (snap.health) { badge.textContent = snap.health.status; badge.className = "badge " + snap.health.status; }
      if (!snap.headline) return;
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
