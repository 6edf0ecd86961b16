// kran dashboard: progressive enhancement only (every page works as plain HTML forms).
"use strict";
(function () {
  const csrf = document.querySelector('meta[name="csrf-token"]');
  const token = csrf ? csrf.content : "";
  document.body.addEventListener("htmx:configRequest", (e) => { e.detail.headers["X-CSRF-Token"] = token; });

  // the job table: select several, kill them
  const all = document.getElementById("select-all");
  const killBtn = document.getElementById("kill-selected");
  const boxes = () => Array.from(document.querySelectorAll('#jobs-table tbody input[name="id"]:not(:disabled)'));
  const refresh = () => { if (killBtn) killBtn.disabled = !boxes().some((b) => b.checked); };
  if (all) all.addEventListener("change", () => { boxes().forEach((b) => { b.checked = all.checked; }); refresh(); });
  document.querySelectorAll('#jobs-table tbody input[name="id"]').forEach((b) => b.addEventListener("change", refresh));
  const jobsForm = document.getElementById("jobs-form");
  if (jobsForm) jobsForm.addEventListener("submit", (e) => {
    const n = boxes().filter((b) => b.checked).length;
    if (!window.confirm(`Kill ${n} job${n === 1 ? "" : "s"}?`)) e.preventDefault();
  });
  const killOne = document.getElementById("kill-job");
  if (killOne) killOne.form.addEventListener("submit", (e) => { if (!window.confirm("Kill this job?")) e.preventDefault(); });

  const FINAL = new Set(["succeeded", "failed", "killed", "timed_out", "lost", "dependency_failed"]);
  function setState(el, state) {
    el.textContent = state;
    el.className = el.className.replace(/\bstate-\S+/g, "") + " state-" + state;
  }

  // live states: one EventSource per page, fed by the server's one reader, from the last
  // event stored when the page was read (`after`: a change meanwhile is not missed)
  function follow(url, after, onJob) {
    const source = new EventSource(after ? `${url}${url.includes("?") ? "&" : "?"}after=${after}` : url);
    source.addEventListener("job", (m) => onJob(JSON.parse(m.data)));
    source.addEventListener("reload", () => { source.close(); window.location.reload(); });
    source.addEventListener("signed-out", () => { source.close(); window.location.reload(); });
    return source;
  }
  const table = document.getElementById("jobs-table");
  if (table) {
    follow(table.dataset.live, table.dataset.after, (ev) => {
      const row = table.querySelector(`tr[data-job="${ev.job_id}"]`);
      if (row) {
        setState(row.querySelector("[data-state]"), ev.to);
        if (FINAL.has(ev.to)) { const box = row.querySelector('input[name="id"]'); if (box) { box.checked = false; box.disabled = true; refresh(); } }
      } else if (ev.from === null) {
        const note = document.getElementById("live-note");
        if (note) note.hidden = false;
      }
    });
  }
  const jobState = document.getElementById("job-state");
  if (jobState) {
    const id = jobState.dataset.jobLive;
    let reloadSoon = null;
    follow(`/ui/events?job=${id}`, jobState.dataset.after, (ev) => {
      setState(jobState, ev.to);
      // attempts, allocation and files change with the state: fetch the page again, quietly
      if (reloadSoon) clearTimeout(reloadSoon);
      reloadSoon = setTimeout(() => { if (!document.getSelection().toString()) window.location.reload(); }, FINAL.has(ev.to) ? 800 : 1500);
    });
  }

  // the log: streamed (followed while the job is active), stdout or stderr
  const log = document.getElementById("log");
  if (log) {
    let controller = null;
    async function show(stream) {
      if (controller) controller.abort();
      controller = new AbortController();
      log.textContent = "";
      const url = `${log.dataset.src}?stream=${stream}&follow=${log.dataset.follow}`;
      try {
        const resp = await fetch(url, { signal: controller.signal, credentials: "same-origin" });
        if (!resp.ok) { log.textContent = `(${resp.status})`; return; }
        const reader = resp.body.getReader();
        const decoder = new TextDecoder();
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          const atEnd = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
          log.textContent += decoder.decode(value, { stream: true });
          if (log.textContent.length > 2000000) log.textContent = log.textContent.slice(-1000000);
          if (atEnd) log.scrollTop = log.scrollHeight;
        }
        log.dataset.done = "true";
      } catch (err) {
        if (err.name !== "AbortError") log.textContent += `\n(${err})`;
      }
    }
    document.querySelectorAll("[data-log-tab]").forEach((tab) => tab.addEventListener("click", () => {
      document.querySelectorAll("[data-log-tab]").forEach((t) => t.setAttribute("aria-selected", t === tab ? "true" : "false"));
      show(tab.dataset.logTab);
    }));
    show("stdout");
  }

  // charts: data in a data-* attribute, drawn by Chart.js
  function cssVar(name) { return getComputedStyle(document.documentElement).getPropertyValue(name).trim(); }
  function chartColors() {
    Chart.defaults.color = cssVar("--fg");
    Chart.defaults.borderColor = cssVar("--line");
  }
  const usage = document.getElementById("job-usage-chart");
  if (usage && window.Chart) {
    chartColors();
    const points = JSON.parse(usage.dataset.series);
    const labels = points.map((p) => new Date(p.t * 1000).toLocaleTimeString());
    new Chart(usage, {
      type: "line",
      data: { labels, datasets: [
        { label: "CPUs in use", data: points.map((p) => p.cpus), yAxisID: "y", borderColor: cssVar("--accent"), pointRadius: 0 },
        { label: "memory (MiB)", data: points.map((p) => p.mem_mb), yAxisID: "y1", borderColor: cssVar("--warn"), pointRadius: 0 },
      ] },
      options: { animation: false, responsive: true, scales: { y: { beginAtZero: true, position: "left" }, y1: { beginAtZero: true, position: "right", grid: { drawOnChartArea: false } } } },
    });
  }
  document.querySelectorAll("canvas[data-chart]").forEach((canvas) => {
    if (!window.Chart) return;
    chartColors();
    const spec = JSON.parse(canvas.dataset.chart);
    const palette = ["--accent", "--warn", "--ok", "--danger", "--info", "--muted"].map(cssVar);
    spec.data.datasets.forEach((d, i) => { d.backgroundColor = d.borderColor = palette[i % palette.length]; });
    spec.options = Object.assign({ animation: false, responsive: true }, spec.options || {});
    new Chart(canvas, spec);
  });

  // a workflow run's graph: step states follow its jobs
  const dag = document.querySelector("[data-dag-live]");
  if (dag) {
    follow("/ui/events", dag.dataset.after, (ev) => {
      dag.querySelectorAll(`[data-job="${ev.job_id}"]`).forEach((g) => {
        g.setAttribute("class", "node " + ev.to);
        const label = g.querySelector("[data-step-state]");
        if (label) label.textContent = ev.to;
      });
    });
  }
})();
