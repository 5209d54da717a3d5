// runledger's dashboard: a small page over the public REST API. Signing in exchanges a client's
// credentials (or takes a pasted token) at /v1/oauth/token; the token lives in sessionStorage
// and every call carries it, so scopes and tenants apply as for any client.
//
// Views (the location's fragment, so links can be shared without the token):
//   #/                                          the organization's pipelines
//   #/pipeline/UUID?period=day&from=D&to=D      one pipeline: buckets, tasks, logs
// A fragment parameter `token=...` signs in with that token and is removed at once.

const TOKEN_KEY = "runledger.token";
const NAMES_KEY = "runledger.names";
const PERIODS = ["day", "week", "month", "quarter", "year"];
const DAY_MS = 86400000;

const main = document.getElementById("main");
const where = document.getElementById("where");
const signOutButton = document.getElementById("sign-out");
let chart = null;

// ---- small helpers -------------------------------------------------------------------------

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (value === undefined || value === null) continue;
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function duration(ms) {
  if (ms === null || ms === undefined) return "–";
  if (ms < 1000) return `${ms} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(1)} s`;
  if (ms < 3600000) return `${Math.floor(ms / 60000)} min ${Math.round((ms % 60000) / 1000)} s`;
  return `${Math.floor(ms / 3600000)} h ${Math.round((ms % 3600000) / 60000)} min`;
}

function rate(successes, failures) {
  const runs = successes + failures;
  return runs === 0 ? "–" : `${Math.round((successes * 1000) / runs) / 10}%`;
}

function ago(text) {
  if (!text) return "never";
  const then = Date.parse(text.replace(" ", "T") + (text.endsWith("Z") ? "" : "Z"));
  const seconds = Math.max(0, Math.round((Date.now() - then) / 1000));
  if (seconds < 90) return `${seconds} s ago`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min ago`;
  if (seconds < 129600) return `${Math.round(seconds / 3600)} h ago`;
  return `${Math.round(seconds / 86400)} d ago`;
}

function isoDate(date) {
  return date.toISOString().slice(0, 10);
}

function parseDate(text) {
  const date = new Date(`${text}T00:00:00Z`);
  return Number.isNaN(date.getTime()) ? null : date;
}

/** Buckets of `period` from the one holding `from` to the one holding `to` (1 to 1000). */
function bucketCount(period, from, to) {
  const months = (d) => d.getUTCFullYear() * 12 + d.getUTCMonth();
  const monday = (d) => new Date(d.getTime() - ((d.getUTCDay() + 6) % 7) * DAY_MS);
  let n;
  switch (period) {
    case "day": n = Math.floor((to - from) / DAY_MS) + 1; break;
    case "week": n = Math.round((monday(to) - monday(from)) / (7 * DAY_MS)) + 1; break;
    case "month": n = months(to) - months(from) + 1; break;
    case "quarter": n = Math.floor(months(to) / 3) - Math.floor(months(from) / 3) + 1; break;
    default: n = to.getUTCFullYear() - from.getUTCFullYear() + 1;
  }
  return Math.min(1000, Math.max(1, n));
}

function names() {
  try { return JSON.parse(sessionStorage.getItem(NAMES_KEY) || "{}"); } catch { return {}; }
}

function rememberNames(pipelines) {
  const known = names();
  for (const p of pipelines) known[p.pipeline_uuid] = p.name;
  sessionStorage.setItem(NAMES_KEY, JSON.stringify(known));
}

// ---- the API -------------------------------------------------------------------------------

class ApiError extends Error {}

async function api(path) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  const response = await fetch(path, { headers: { Authorization: `Bearer ${token}` } });
  if (response.status === 401) {
    sessionStorage.removeItem(TOKEN_KEY);
    route();
    throw new ApiError("the token is no longer valid; sign in again");
  }
  if (!response.ok) {
    let reason = response.statusText;
    try { reason = (await response.json()).errors?.[0] || reason; } catch { /* not JSON */ }
    throw new ApiError(`${response.status}: ${reason}`);
  }
  return { body: await response.json(), next: response.headers.get("x-next-cursor") };
}

/** Runs `tasks` (functions returning promises) with at most `width` at once. */
async function limited(tasks, width) {
  const results = new Array(tasks.length);
  let next = 0;
  async function worker() {
    while (next < tasks.length) {
      const index = next++;
      try { results[index] = await tasks[index](); } catch (error) { results[index] = error; }
    }
  }
  await Promise.all(Array.from({ length: Math.min(width, tasks.length) }, worker));
  return results;
}

// ---- sign in -------------------------------------------------------------------------------

function showSignIn(message) {
  signOutButton.hidden = true;
  where.textContent = "";
  const status = el("p", { class: "error", id: "signin-error" }, message || "");
  const form = el("form", { class: "signin", id: "signin" },
    el("h1", {}, "Sign in"),
    el("p", { class: "muted" }, "With an OAuth client's id and secret (scope stats:read), or a token."),
    el("label", { for: "client_id" }, "Client id"),
    el("input", { id: "client_id", name: "client_id", autocomplete: "username" }),
    el("label", { for: "client_secret" }, "Client secret"),
    el("input", { id: "client_secret", name: "client_secret", type: "password", autocomplete: "current-password" }),
    el("label", { for: "token" }, "…or an access token"),
    el("input", { id: "token", name: "token", type: "password" }),
    el("button", { class: "primary", type: "submit" }, "Sign in"),
    status);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const data = new FormData(form);
    if (data.get("token")) {
      sessionStorage.setItem(TOKEN_KEY, data.get("token").trim());
      route();
      return;
    }
    const body = new URLSearchParams({
      grant_type: "client_credentials",
      client_id: data.get("client_id").trim(),
      client_secret: data.get("client_secret").trim(),
      scope: "stats:read",
    });
    const response = await fetch("/v1/oauth/token", { method: "POST", body });
    const answer = await response.json().catch(() => ({}));
    if (!response.ok) {
      status.textContent = answer.error_description || answer.errors?.[0] || response.statusText;
      return;
    }
    sessionStorage.setItem(TOKEN_KEY, answer.access_token);
    route();
  });
  main.replaceChildren(form);
}

signOutButton.addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  route();
});

// ---- the overview --------------------------------------------------------------------------

function sparkline(buckets) {
  const width = 120, height = 28, gap = 1;
  const peak = Math.max(1, ...buckets.map((b) => b.num_of_successes + b.num_of_failures));
  const bar = width / buckets.length;
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("class", "spark");
  svg.setAttribute("width", width);
  svg.setAttribute("height", height);
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  buckets.forEach((b, i) => {
    const ok = (b.num_of_successes / peak) * height;
    const failed = (b.num_of_failures / peak) * height;
    for (const [h, y, color] of [[ok, height - ok, "var(--ok)"], [failed, height - ok - failed, "var(--fail)"]]) {
      if (h <= 0) continue;
      const rect = document.createElementNS("http://www.w3.org/2000/svg", "rect");
      rect.setAttribute("x", (i * bar).toFixed(2));
      rect.setAttribute("y", y.toFixed(2));
      rect.setAttribute("width", Math.max(0.5, bar - gap).toFixed(2));
      rect.setAttribute("height", Math.max(0.5, h).toFixed(2));
      rect.setAttribute("fill", color);
      svg.append(rect);
    }
  });
  const title = document.createElementNS("http://www.w3.org/2000/svg", "title");
  title.textContent = "task runs per day, last 30 days (green: succeeded, red: failed)";
  svg.append(title);
  return svg;
}

// Each cell names itself (`data-label`), for the phone layout where a row becomes a card.
function windowCells(window, key, label) {
  const runs = window.num_of_successes + window.num_of_failures;
  return [
    el("td", { "data-field": `runs-${key}`, "data-label": `Runs ${label}` }, runs),
    el("td", { "data-field": `rate-${key}`, "data-label": `Success ${label}` }, rate(window.num_of_successes, window.num_of_failures)),
  ];
}

async function showOverview() {
  where.textContent = "Pipelines";
  const body = el("tbody", { id: "pipelines" });
  const more = el("button", { class: "more", type: "button", hidden: true }, "More pipelines");
  const status = el("p", { class: "muted", id: "overview-status" }, "Loading…");
  const firing = el("ul", { id: "firing", class: "alerts" });
  main.replaceChildren(
    el("h1", {}, "Firing alerts"),
    firing,
    el("h1", {}, "Pipelines"),
    el("div", { class: "scroll" },
      el("table", { class: "overview" },
        el("thead", {}, el("tr", {},
          el("th", {}, "Pipeline"), el("th", {}, "Last run"),
          el("th", {}, "Runs 24 h"), el("th", {}, "Success 24 h"),
          el("th", {}, "Runs 7 d"), el("th", {}, "Success 7 d"),
          el("th", {}, "Runs 30 d"), el("th", {}, "Success 30 d"),
          el("th", {}, "p50 / p95 (30 d)"), el("th", {}, "30 days"))),
        body)),
    more, status);

  const today = new Date();
  const from = isoDate(new Date(Date.UTC(today.getUTCFullYear(), today.getUTCMonth(), today.getUTCDate()) - 29 * DAY_MS));
  const { body: alerts } = await api("/v1/alerts?state=firing&limit=100");
  for (const alert of alerts) firing.append(alertItem(alert, true));
  if (alerts.length === 0) firing.append(el("li", { class: "muted" }, "No alert is firing."));
  let cursor = "";
  async function page() {
    more.hidden = true;
    const { body: pipelines, next } = await api(`/v1/stats/pipelines?limit=100${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`);
    rememberNames(pipelines);
    const sparks = [];
    for (const p of pipelines) {
      const spark = el("td", { class: "spark", "data-label": "Runs per day, 30 days" });
      sparks.push([p.pipeline_uuid, spark]);
      const last = p.last_run;
      body.append(el("tr", { "data-pipeline": p.pipeline_uuid },
        el("td", { class: "name" }, el("a", { href: `#/pipeline/${p.pipeline_uuid}` }, p.name || p.pipeline_uuid)),
        el("td", { "data-field": "last-run", "data-label": "Last run" }, last
          ? el("span", { class: last.is_successful ? "ok" : "fail", title: last.executed_at },
            `${last.is_successful ? "✓" : "✗"} ${ago(last.executed_at)}`)
          : el("span", { class: "muted" }, "none")),
        ...windowCells(p.last_24h, "24h", "24 h"),
        ...windowCells(p.last_7d, "7d", "7 d"),
        ...windowCells(p.last_30d, "30d", "30 d"),
        el("td", { "data-field": "p50-p95-30d", "data-label": "p50 / p95 (30 d)" },
          `${duration(p.last_30d.duration_p50)} / ${duration(p.last_30d.duration_p95)}`),
        spark));
    }
    status.textContent = `${body.children.length} pipelines`;
    cursor = next;
    more.hidden = !next;
    await limited(sparks.map(([uuid, cell]) => async () => {
      const { body: buckets } = await api(`/v1/stats/pipelines/${uuid}/aggregated-stats/${from}/day/30?fill=zero`);
      cell.append(sparkline(buckets));
    }), 6);
  }
  more.addEventListener("click", () => page().catch(showError));
  await page();
  if (body.children.length === 0) status.textContent = "No pipelines yet: report task runs, and they appear here.";
  document.body.dataset.ready = "overview";
}

/** One alert: its state, rule, pipeline (linked, on the overview) and since when. */
function alertItem(alert, withPipeline) {
  const pipeline = alert.pipeline_name || alert.pipeline_uuid;
  const state = alert.state === "firing"
    ? el("span", { class: "fail" }, "✗ firing")
    : el("span", { class: "ok" }, "✓ resolved");
  const when = alert.state === "firing"
    ? `since ${alert.since.replace("T", " ").replace("Z", "")}`
    : `${alert.since.replace("T", " ").replace("Z", "")} to ${alert.resolved_at.replace("T", " ").replace("Z", "")}`;
  return el("li", { "data-alert": alert.alert_id },
    state, " ", el("strong", {}, alert.rule_name), ` (${alert.kind}) `,
    ...(withPipeline ? [el("a", { href: `#/pipeline/${alert.pipeline_uuid}` }, pipeline), " "] : []),
    el("span", { class: "muted" }, when));
}

// ---- one pipeline --------------------------------------------------------------------------

function card(label, value, field) {
  return el("div", { class: "card" }, el("div", { class: "value", "data-field": field }, value), el("div", { class: "label" }, label));
}

function label(bucket, period) {
  const day = bucket.date_from.slice(0, 10);
  if (period === "month") return day.slice(0, 7);
  if (period === "quarter") return `${day.slice(0, 4)} Q${Math.floor(Number(day.slice(5, 7)) / 3) + 1}`;
  if (period === "year") return day.slice(0, 4);
  return day;
}

function shortId(uuid) {
  return `${uuid.slice(0, 4)}…${uuid.slice(-4)}`;
}

async function showPipeline(uuid, params) {
  if (!(uuid in names())) {
    // Opened directly: learn the organization's pipeline names (one page of up to 1,000).
    rememberNames((await api("/v1/stats/pipelines?limit=1000")).body);
  }
  const name = names()[uuid] || uuid;
  where.textContent = name;
  const today = new Date();
  const period = PERIODS.includes(params.get("period")) ? params.get("period") : "day";
  const to = parseDate(params.get("to") || "") || new Date(Date.UTC(today.getUTCFullYear(), today.getUTCMonth(), today.getUTCDate()));
  const from = parseDate(params.get("from") || "") || new Date(to.getTime() - 29 * DAY_MS);
  const n = bucketCount(period, from, to);

  const periodSelect = el("select", { id: "period" }, PERIODS.map((p) => el("option", { value: p, ...(p === period ? { selected: "" } : {}) }, p)));
  const fromInput = el("input", { id: "from", type: "date", value: isoDate(from) });
  const toInput = el("input", { id: "to", type: "date", value: isoDate(to) });
  const controls = el("form", { class: "controls" },
    el("label", {}, "Period", periodSelect), el("label", {}, "From", fromInput), el("label", {}, "To", toInput),
    el("button", { type: "submit" }, "Show"));
  controls.addEventListener("submit", (event) => {
    event.preventDefault();
    location.hash = `#/pipeline/${uuid}?period=${periodSelect.value}&from=${fromInput.value}&to=${toInput.value}`;
  });
  const cards = el("div", { class: "cards", id: "summary" });
  const canvas = el("canvas", { id: "buckets" });
  const tasks = el("tbody", { id: "tasks" });
  const logs = el("tbody", { id: "logs" });
  const running = el("tbody", { id: "running" });
  const history = el("ul", { id: "alert-history", class: "alerts" });
  const logsTitle = el("h2", { id: "logs-title" }, "Newest runs");
  const more = el("button", { class: "more", type: "button", hidden: true }, "More runs");
  main.replaceChildren(
    el("h1", {}, name),
    controls, cards,
    el("div", { class: "chart" }, canvas),
    el("p", { class: "muted" }, "Click a bar to see that bucket's runs."),
    el("h2", {}, "Tasks"),
    el("div", { class: "scroll" }, el("table", {},
      el("thead", {}, el("tr", {}, el("th", {}, "Task"), el("th", {}, "Successes"), el("th", {}, "Failures"),
        el("th", { class: "hide-narrow" }, "Success"), el("th", {}, "Average"), el("th", { class: "hide-narrow" }, "p50"), el("th", {}, "p95"))),
      tasks)),
    el("h2", {}, "Alerts"),
    history,
    el("h2", {}, "Running now"),
    el("p", { class: "muted" }, "Task runs that started and have not finished (a run stuck here never ended)."),
    el("div", { class: "scroll" }, el("table", {},
      el("thead", {}, el("tr", {}, el("th", {}, "Started"), el("th", {}, "Running for"), el("th", {}, "Task"),
        el("th", { class: "hide-narrow" }, "Pipeline run"))),
      running)),
    logsTitle,
    el("div", { class: "scroll" }, el("table", {},
      el("thead", {}, el("tr", {}, el("th", {}, "Ended"), el("th", {}, "Task"), el("th", {}, "Result"),
        el("th", {}, "Duration"), el("th", { class: "hide-narrow" }, "Metric"))),
      logs)),
    more);

  const first = isoDate(from), last = isoDate(to);
  const [{ body: stats }, { body: buckets }] = await Promise.all([
    api(`/v1/stats/pipelines/${uuid}/stats/${first}/${last}`),
    api(`/v1/stats/pipelines/${uuid}/aggregated-stats/${first}/${period}/${n}?fill=zero`),
  ]);
  cards.append(
    card("successes", stats.num_of_successes, "successes"),
    card("failures", stats.num_of_failures, "failures"),
    card("success rate", rate(stats.num_of_successes, stats.num_of_failures), "rate"),
    card("average duration", duration(stats.average_duration), "average"),
    card("p50 / p95", `${duration(stats.duration_p50)} / ${duration(stats.duration_p95)}`, "p50-p95"),
    card("last run", stats.last_run_executed_at
      ? `${stats.is_last_run_successful ? "✓" : "✗"} ${ago(stats.last_run_executed_at)}` : "none", "last-run"));

  if (chart) chart.destroy();
  chart = null;
  if (window.Chart) {
    chart = new window.Chart(canvas, {
      data: {
        labels: buckets.map((b) => label(b, period)),
        datasets: [
          { type: "bar", label: "succeeded", data: buckets.map((b) => b.num_of_successes), backgroundColor: "#2e8b57", stack: "runs", yAxisID: "runs", order: 2 },
          { type: "bar", label: "failed", data: buckets.map((b) => b.num_of_failures), backgroundColor: "#d64545", stack: "runs", yAxisID: "runs", order: 2 },
          { type: "line", label: "average duration (s)", data: buckets.map((b) => (b.num_of_successes + b.num_of_failures) ? b.average_duration / 1000 : null), borderColor: "#1d4ed8", backgroundColor: "#1d4ed8", yAxisID: "seconds", spanGaps: true, order: 1, pointRadius: 2 },
          { type: "line", label: "p95 duration (s)", data: buckets.map((b) => b.duration_p95 === null ? null : b.duration_p95 / 1000), borderColor: "#a855f7", backgroundColor: "#a855f7", borderDash: [4, 3], yAxisID: "seconds", spanGaps: true, order: 1, pointRadius: 2 },
        ],
      },
      options: {
        animation: false,
        maintainAspectRatio: false,
        interaction: { mode: "index", intersect: false },
        scales: {
          runs: { type: "linear", position: "left", stacked: true, beginAtZero: true, title: { display: true, text: "runs" } },
          seconds: { type: "linear", position: "right", beginAtZero: true, grid: { drawOnChartArea: false }, title: { display: true, text: "seconds" } },
          x: { stacked: true },
        },
        onClick: (_event, elements) => {
          if (elements.length === 0) return;
          const bucket = buckets[elements[0].index];
          loadLogs(bucket.date_from.replace(" ", "T"), bucket.date_to.replace(" ", "T"), `Runs of ${label(bucket, period)}`).catch(showError);
        },
      },
    });
  }

  let logCursor = "", logRange = null;
  async function loadLogs(rangeFrom, rangeTo, title) {
    if (title) {
      logsTitle.textContent = title;
      logs.replaceChildren();
      logCursor = "";
      logRange = [rangeFrom, rangeTo];
    }
    more.hidden = true;
    const [a, b] = logRange;
    const { body: entries, next } = await api(`/v1/stats/pipelines/${uuid}/logs/${a}/${b}?limit=50${logCursor ? `&cursor=${encodeURIComponent(logCursor)}` : ""}`);
    for (const entry of entries) {
      logs.append(el("tr", { "data-task-run": entry.task_run_uuid },
        el("td", { title: entry.task_run_uuid }, entry.executed_at.replace("T", " ").replace("Z", "")),
        el("td", { title: entry.task_uuid }, `${entry.task_type} ${shortId(entry.task_uuid)}`),
        el("td", { class: entry.is_successful ? "ok" : "fail" }, entry.is_successful ? "✓ ok" : "✗ failed"),
        el("td", {}, duration(entry.duration)),
        el("td", { class: "hide-narrow" }, entry.metric_value ?? "–")));
    }
    if (logs.children.length === 0) logs.append(el("tr", {}, el("td", { colspan: 5, class: "muted" }, "No runs in this range.")));
    logCursor = next;
    more.hidden = !next;
  }
  more.addEventListener("click", () => loadLogs().catch(showError));
  await loadLogs(first, last, "Newest runs");

  // The pipeline's alerts, newest first (one page of 50).
  const { body: alerts } = await api(`/v1/alerts?pipeline_uuid=${uuid}&limit=50`);
  for (const alert of alerts) history.append(alertItem(alert, false));
  if (alerts.length === 0) history.append(el("li", { class: "muted" }, "No alert ever fired."));

  // What runs now, newest start first (one page of 100).
  const { body: started } = await api(`/v1/stats/pipelines/${uuid}/running?limit=100`);
  for (const run of started) {
    const since = Date.now() - Date.parse(run.started_at);
    running.append(el("tr", { "data-running": run.task_run_uuid },
      el("td", { title: run.task_run_uuid }, run.started_at.replace("T", " ").replace("Z", "")),
      el("td", {}, duration(Math.max(0, since))),
      el("td", { title: run.task_uuid }, `${run.task_type} ${shortId(run.task_uuid)}`),
      el("td", { class: "hide-narrow", title: run.pipeline_run_uuid }, shortId(run.pipeline_run_uuid))));
  }
  if (running.children.length === 0) running.append(el("tr", {}, el("td", { colspan: 4, class: "muted" }, "Nothing is running.")));

  // The tasks that ran in the range, from its newest 1,000 runs, each with its own stats.
  const { body: recent } = await api(`/v1/stats/pipelines/${uuid}/logs/${first}/${last}?limit=1000`);
  const seen = new Map();
  for (const entry of recent) if (!seen.has(entry.task_uuid)) seen.set(entry.task_uuid, entry.task_type);
  const rows = await limited([...seen].map(([task, type]) => async () => {
    const { body: s } = await api(`/v1/stats/tasks/${task}/stats/${first}/${last}`);
    return el("tr", { "data-task": task },
      el("td", { title: task }, `${type} ${shortId(task)}`),
      el("td", { "data-field": "successes" }, s.num_of_successes),
      el("td", { "data-field": "failures" }, s.num_of_failures),
      el("td", { class: "hide-narrow" }, rate(s.num_of_successes, s.num_of_failures)),
      el("td", { "data-field": "average" }, duration(s.average_duration)),
      el("td", { class: "hide-narrow" }, duration(s.duration_p50)),
      el("td", {}, duration(s.duration_p95)));
  }), 6);
  for (const row of rows) if (row instanceof Node) tasks.append(row);
  if (tasks.children.length === 0) tasks.append(el("tr", {}, el("td", { colspan: 7, class: "muted" }, "No task ran in this range.")));
  document.body.dataset.ready = "pipeline";
}

// ---- routing -------------------------------------------------------------------------------

function showError(error) {
  main.append(el("p", { class: "error", id: "error" }, error.message || String(error)));
  document.body.dataset.ready = "error";
}

function route() {
  delete document.body.dataset.ready;
  let hash = location.hash.replace(/^#/, "");
  const [path, query] = hash.includes("?") ? hash.split("?", 2) : hash.startsWith("token=") ? ["", hash] : [hash, ""];
  const params = new URLSearchParams(query);
  if (params.has("token")) {
    sessionStorage.setItem(TOKEN_KEY, params.get("token"));
    params.delete("token");
    hash = params.toString() ? `${path}?${params}` : path;
    history.replaceState(null, "", `${location.pathname}${hash ? `#${hash}` : ""}`);
  }
  if (!sessionStorage.getItem(TOKEN_KEY)) {
    showSignIn();
    return;
  }
  signOutButton.hidden = false;
  const pipeline = path.match(/^\/pipeline\/([0-9a-fA-F-]{36})$/);
  const view = pipeline ? showPipeline(pipeline[1], params) : showOverview();
  view.catch((error) => { if (!(error instanceof ApiError) || sessionStorage.getItem(TOKEN_KEY)) showError(error); });
}

window.addEventListener("hashchange", route);
route();
