// LotLens console: one module, no framework, no build step.
// The client's key stays in this tab's sessionStorage; every API call is signed here with
// WebCrypto exactly as the SDK signs it, so the API serves the console like any other client.

const API = "/api/v1";
const CREDENTIALS = "lotlens.console.credentials";
const TERMINAL = new Set(["completed", "failed", "cancelled"]);
const LOTS_PER_PAGE = 50;
const POLL_MS = 2000;
// Model-written description HTML is rebuilt from these elements only, with no attributes.
const ALLOWED_TAGS = new Set(["p", "ul", "ol", "li", "b", "strong", "i", "em", "br"]);
const XHTML = "http://www.w3.org/1999/xhtml";
// Elements whose content is not readable text: dropped whole rather than unwrapped.
const DROPPED_TAGS = new Set(["script", "style", "template", "noscript", "iframe", "object",
  "embed", "textarea", "select", "title", "head"]);

const main = document.getElementById("main");
let currentView = 0; // bumped on each navigation so a stale poll stops touching the page

// ---- credentials and signing ----

function savedCredentials() {
  const raw = sessionStorage.getItem(CREDENTIALS);
  return raw ? JSON.parse(raw) : null;
}

async function hmacHex(key, message) {
  const encoder = new TextEncoder();
  const cryptoKey = await crypto.subtle.importKey(
    "raw", encoder.encode(key), { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  const mac = await crypto.subtle.sign("HMAC", cryptoKey, encoder.encode(message));
  return Array.from(new Uint8Array(mac), (byte) => byte.toString(16).padStart(2, "0")).join("");
}

class ApiError extends Error {
  constructor(status, body) {
    const detail = body && body.message ? body.message : `HTTP ${status}`;
    super(body && body.code ? `${detail} (${body.code})` : detail);
    this.status = status;
    this.body = body;
  }
}

// Calls the API with `X-Signature: sha256=<hex>` over `signedText`; 202 is a normal answer
// (results of a running job), anything else outside 2xx becomes an ApiError.
async function signedRequest(method, path, signedText, key = savedCredentials()?.key) {
  const signature = "sha256=" + await hmacHex(key, signedText);
  const response = await fetch(path, { method, headers: { "X-Signature": signature, Accept: "application/json" } });
  const body = await response.json().catch(() => null);
  if (!response.ok) throw new ApiError(response.status, body);
  return { status: response.status, body };
}

// The contract signs the raw query string of the listing and the job id of every other call.
const api = {
  listJobs: (query, key) => {
    const raw = new URLSearchParams(query).toString();
    return signedRequest("GET", `${API}/batch-jobs${raw ? "?" + raw : ""}`, raw, key);
  },
  jobStatus: (id) => signedRequest("GET", `${API}/batch-status/${encodeURIComponent(id)}`, id),
  jobResults: (id) => signedRequest("GET", `${API}/batch-results/${encodeURIComponent(id)}`, id),
  deliveries: (id) => signedRequest("GET", `${API}/batch-jobs/${encodeURIComponent(id)}/webhooks?limit=500`, id),
  redeliver: (id) => signedRequest("POST", `${API}/batch-jobs/${encodeURIComponent(id)}/webhooks/redeliver`, id),
  cancel: (id) => signedRequest("POST", `${API}/batch-jobs/${encodeURIComponent(id)}/cancel`, id),
  retryFailed: (id) => signedRequest("POST", `${API}/batch-jobs/${encodeURIComponent(id)}/retry-failed`, id),
};

// ---- small DOM helpers (text only: nothing from the API is ever parsed as HTML here) ----

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  node.append(...children.filter((child) => child !== null && child !== undefined));
  return node;
}

function byId(id) {
  return document.getElementById(id);
}

function showPage(templateId) {
  currentView += 1;
  main.replaceChildren(byId(templateId).content.cloneNode(true));
  // Move focus to the new heading so keyboard and screen-reader users start at the top.
  main.querySelector("h1").focus();
  return currentView;
}

function when(iso) {
  return iso ? iso.replace("T", " ").replace(/\.\d+/, "").replace(/(\+00:00|Z)$/, " UTC") : "—";
}

function say(target, message, isError = false) {
  target.textContent = message;
  target.classList.toggle("error", isError);
}

function progressBar(job) {
  const p = job.progress;
  const text = `${p.processed_lots} of ${p.total_lots} lots described, ${p.failed_lots} failed (${p.completion_percentage}%)`;
  const bar = el("progress", { max: "100", value: String(p.completion_percentage), "aria-label": `Progress of job ${job.job_id}` });
  return el("span", { class: "progress" }, bar, el("span", {}, text));
}

function jobLink(jobId) {
  return el("a", { href: `#/jobs/${encodeURIComponent(jobId)}` }, el("code", {}, jobId));
}

function statusBadge(status) {
  return el("span", { class: `badge status-${status}` }, status);
}

// ---- safe rendering of the model's HTML ----

// Rebuilds `html` from the allowlist: the parsed document is inert (DOMParser runs no script
// and loads no image), and only new, attribute-less elements and text nodes reach the page.
export function safeDescription(html) {
  const parsed = new DOMParser().parseFromString(String(html), "text/html");
  const fragment = document.createDocumentFragment();
  copyAllowed(parsed.body, fragment);
  return fragment;
}

function copyAllowed(source, target) {
  for (const node of source.childNodes) {
    if (node.nodeType === Node.TEXT_NODE) {
      target.append(document.createTextNode(node.data));
    } else if (node.nodeType === Node.ELEMENT_NODE && node.namespaceURI === XHTML && !DROPPED_TAGS.has(node.localName)) {
      if (ALLOWED_TAGS.has(node.localName)) {
        const copy = document.createElement(node.localName);
        target.append(copy);
        copyAllowed(node, copy);
      } else {
        copyAllowed(node, target); // an unknown wrapper (a, span, div): keep its text only
      }
    }
  }
}

// ---- pages ----

function showLogin(message = "") {
  byId("nav").hidden = true;
  showPage("login-page");
  const error = byId("login-error");
  say(error, message, true);
  byId("login").addEventListener("submit", async (event) => {
    event.preventDefault();
    const clientId = byId("client-id").value.trim();
    const key = byId("client-key").value;
    const missing = [["client-id", clientId, "Enter the client id."], ["client-key", key, "Enter the shared key."]]
      .filter(([, value]) => !value);
    for (const [id, value] of [["client-id", clientId], ["client-key", key]]) {
      byId(id).setAttribute("aria-invalid", String(!value));
    }
    if (missing.length) {
      // Named per field, and the first empty one focused: "enter both" said neither which was missing
      // nor where to go, to a screen reader.
      byId(missing[0][0]).focus();
      return say(error, missing.map(([, , text]) => text).join(" "), true);
    }
    if (!window.crypto || !crypto.subtle) {
      return say(error, "This browser can sign only on a secure page: open the console over HTTPS (or on localhost).", true);
    }
    try {
      await api.listJobs({ limit: "1" }, key); // proves the key before keeping it
    } catch (failure) {
      const why = failure.status === 403 ? "The server accepts no client with this key." : failure.message;
      return say(error, why, true);
    }
    sessionStorage.setItem(CREDENTIALS, JSON.stringify({ clientId, key }));
    go("#/jobs");
  });
}

async function showJobs(query) {
  const view = showPage("jobs-page");
  const status = query.get("status") || "";
  const limit = query.get("limit") || "25";
  const offset = Number(query.get("offset") || "0");
  byId("status-filter").value = status;
  byId("page-size").value = limit;
  byId("job-filters").addEventListener("submit", (event) => {
    event.preventDefault();
    go("#/jobs?" + listQuery(byId("status-filter").value, byId("page-size").value, 0));
  });
  const request = { limit };
  if (status) request.status = status;
  if (offset) request.offset = String(offset);
  let answer;
  try {
    answer = (await api.listJobs(request)).body;
  } catch (failure) {
    return handleFailure(failure, byId("jobs-caption"));
  }
  if (view !== currentView) return;
  const rows = answer.jobs.map((job) => el("tr", {},
    el("td", {}, jobLink(job.job_id)),
    el("td", {}, statusBadge(job.status)),
    el("td", {}, when(job.created_at)),
    el("td", {}, job.languages.join(", ")),
    el("td", {}, progressBar(job))));
  byId("job-rows").replaceChildren(...rows);
  const page = answer.pagination;
  byId("jobs-caption").textContent = page.total
    ? `Jobs ${page.offset + 1}–${page.offset + answer.jobs.length} of ${page.total}, newest first`
    : "No jobs match these filters.";
  pagerButton("previous-page", offset > 0, listQuery(status, limit, Math.max(0, offset - Number(limit))));
  pagerButton("next-page", page.has_more, listQuery(status, limit, offset + Number(limit)));
}

function listQuery(status, limit, offset) {
  const query = new URLSearchParams({ limit: String(limit), offset: String(offset) });
  if (status) query.set("status", status);
  return query.toString();
}

function pagerButton(id, enabled, query) {
  const button = byId(id);
  button.disabled = !enabled;
  button.addEventListener("click", () => go("#/jobs?" + query));
}

async function showJob(jobId) {
  const view = showPage("job-page");
  byId("job-id").textContent = jobId;
  const state = { lots: [], shown: 0, poll: null, paused: false };
  byId("refresh-job").addEventListener("click", () => loadJob(jobId, view, state));
  byId("pause-updates").addEventListener("click", () => togglePause(jobId, view, state));
  byId("cancel-job").addEventListener("click", () => cancelJob(jobId, view, state));
  byId("retry-failed").addEventListener("click", () => retryFailed(jobId));
  byId("redeliver").addEventListener("click", () => redeliver(jobId, view));
  byId("only-failed").addEventListener("change", () => renderLots(state, true));
  byId("more-lots").addEventListener("click", () => renderLots(state, false));
  await loadJob(jobId, view, state);
}

// Reads the status; a running job is polled until it ends, then its lots and deliveries load.
// One poll is pending at most: Refresh, Cancel and a poll each read now and replace the pending
// one (each used to start a loop of its own, so five clicks polled six times every 2 s).
async function loadJob(jobId, view, state) {
  clearTimeout(state.poll);
  let job;
  try {
    job = (await api.jobStatus(jobId)).body;
  } catch (failure) {
    return handleFailure(failure, byId("action-result"));
  }
  if (view !== currentView) return;
  renderSummary(job);
  announceChange(job, state);
  const terminal = TERMINAL.has(job.status);
  byId("cancel-job").disabled = terminal;
  byId("retry-failed").disabled = !terminal || job.progress.failed_lots === 0;
  byId("redeliver").disabled = !terminal || !job.webhook_configured;
  byId("pause-updates").hidden = terminal;
  if (!terminal) {
    byId("lots-note").textContent = "Lots and their descriptions appear when the job finishes.";
    clearTimeout(state.poll);
    if (!state.paused) state.poll = setTimeout(() => { if (view === currentView) loadJob(jobId, view, state); }, POLL_MS);
    return;
  }
  await Promise.all([loadLots(jobId, view, state), loadDeliveries(jobId, view)]);
}

// WCAG 2.2.2: a page that updates itself can be held still (Refresh still reads once).
function togglePause(jobId, view, state) {
  state.paused = !state.paused;
  const button = byId("pause-updates");
  button.setAttribute("aria-pressed", String(state.paused));
  button.textContent = state.paused ? "Resume updates" : "Pause updates";
  if (state.paused) clearTimeout(state.poll);
  else loadJob(jobId, view, state);
}

// The summary is rebuilt at every poll, which no screen reader follows: a change of status is
// said once in a live region (not the first reading: the page says that itself).
function announceChange(job, state) {
  if (state.announced && state.announced !== job.status) {
    const p = job.progress;
    byId("job-announcer").textContent =
      `Job ${job.status}: ${p.processed_lots} of ${p.total_lots} lots described, ${p.failed_lots} failed.`;
  }
  state.announced = job.status;
}

function renderSummary(job) {
  const facts = [
    ["Status", statusBadge(job.status)],
    ["Stage", job.processing_details.current_stage],
    ["Progress", progressBar(job)],
    ["Languages", job.languages.join(", ")],
    ["Created", when(job.created_at)],
    ["Updated", when(job.updated_at)],
    ["Finished", when(job.completed_at || job.cancelled_at)],
    ["Webhook", job.webhook_configured ? "configured" : "none"],
  ];
  if (job.error_message) facts.push(["Error", job.error_message]);
  // Retries link jobs both ways (`retry_of`, `retried_as`), on servers that have retry-failed.
  if (job.retry_of) facts.push(["Retry of", jobLink(job.retry_of)]);
  if (job.retried_as) facts.push(["Retried as", jobLink(job.retried_as)]);
  const summary = byId("job-summary");
  // A focused link in the summary (a retry's job) is rebuilt at every poll: focus moves to its
  // successor, or a keyboard user would be sent back to the top of the page every 2 s.
  const focused = summary.contains(document.activeElement) ? document.activeElement.getAttribute("href") : null;
  summary.replaceChildren(...facts.flatMap(([name, value]) => [el("dt", {}, name), el("dd", {}, value)]));
  if (focused !== null) {
    const successor = [...summary.querySelectorAll("a")].find((link) => link.getAttribute("href") === focused);
    if (successor) successor.focus();
  }
  renderUsage(job.processing_details.usage);
}

// `usage` (tokens by kind and an estimated cost, for the job and per model) is an added field:
// a server or job without it sends none and the section stays hidden.
const USAGE_COLUMNS = ["input_tokens", "cached_input_tokens", "output_tokens", "reasoning_tokens", "estimated_cost_usd"];

function renderUsage(usage) {
  if (!usage || typeof usage !== "object") return;
  const rows = [["All models", usage], ...Object.entries(usage.by_model || {})];
  byId("usage-rows").replaceChildren(...rows.map(([model, counts]) => el("tr", {},
    el("th", { scope: "row" }, model),
    ...USAGE_COLUMNS.map((kind) => el("td", {}, usageValue(kind, counts[kind]))))));
  byId("usage-section").hidden = false;
}

function usageValue(kind, value) {
  if (value === null || value === undefined) return "—";
  return kind === "estimated_cost_usd" ? `$${Number(value).toFixed(4)}` : Number(value).toLocaleString("en-US");
}

function lotUsage(usage) {
  return `Tokens: ${usageValue("input_tokens", usage.input_tokens)} input`
    + ` (${usageValue("cached_input_tokens", usage.cached_input_tokens)} cached),`
    + ` ${usageValue("output_tokens", usage.output_tokens)} output`
    + ` (${usageValue("reasoning_tokens", usage.reasoning_tokens)} reasoning);`
    + ` estimated cost ${usageValue("estimated_cost_usd", usage.estimated_cost_usd)}.`;
}

async function loadLots(jobId, view, state) {
  let answer;
  try {
    answer = (await api.jobResults(jobId)).body;
  } catch (failure) {
    return handleFailure(failure, byId("lots-note"));
  }
  if (view !== currentView || !answer.results) return;
  renderUsage(answer.processing_summary.usage);
  state.lots = answer.results.lots;
  renderLots(state, true);
}

function renderLots(state, fromStart) {
  const onlyFailed = byId("only-failed").checked;
  const lots = onlyFailed ? state.lots.filter((lot) => lot.status === "failed") : state.lots;
  if (fromStart) {
    byId("lots").replaceChildren();
    state.shown = 0;
  }
  const next = lots.slice(state.shown, state.shown + LOTS_PER_PAGE);
  byId("lots").append(...next.map(lotItem));
  state.shown += next.length;
  byId("lots-note").textContent = `${lots.length} ${onlyFailed ? "failed " : ""}lots, ${state.shown} shown.`;
  byId("more-lots").hidden = state.shown >= lots.length;
}

function lotItem(lot) {
  const item = el("li", { class: "lot" },
    el("h3", {}, "Lot ", el("code", {}, lot.lot_id), " ", statusBadge(lot.status)),
    el("p", {}, `${lot.processed_images} image(s) described.`));
  if (lot.usage) item.append(el("p", {}, lotUsage(lot.usage)));
  if (lot.error_message) item.append(el("p", { class: "reason" }, el("strong", {}, "Reason: "), lot.error_message));
  if (lot.missing_images.length) {
    item.append(el("p", {}, "Missing images:"),
      el("ul", { class: "missing" }, ...lot.missing_images.map((url) => el("li", {}, el("code", {}, url)))));
  }
  for (const description of lot.descriptions) {
    // `dir="auto"`: an Arabic or Hebrew description takes its direction from its own text; in this
    // left-to-right page its clauses and its full stop were laid out in the wrong order.
    const block = el("div", { class: "damages", dir: "auto" }, safeDescription(description.damages));
    // A tag the browser rejects must not break the page: `lang` is only set when it looks like BCP 47.
    if (/^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$/.test(description.language)) block.setAttribute("lang", description.language);
    item.append(el("section", { class: "description" }, el("h4", {}, description.language), block));
  }
  return item;
}

async function loadDeliveries(jobId, view) {
  let answer;
  try {
    answer = (await api.deliveries(jobId)).body;
  } catch (failure) {
    return handleFailure(failure, byId("redeliver-result"));
  }
  if (view !== currentView) return [];
  const rows = byId("delivery-rows");
  rows.replaceChildren(...answer.deliveries.map(deliveryRow));
  rows.dataset.total = answer.pagination.total;
  if (!answer.deliveries.length) {
    rows.append(el("tr", {}, el("td", { colspan: "5" }, "No deliveries recorded.")));
  } else if (answer.pagination.has_more) {
    rows.append(el("tr", {}, el("td", { colspan: "5" },
      `The first ${answer.deliveries.length} of ${answer.pagination.total} deliveries.`)));
  }
  return answer;
}

function deliveryRow(delivery) {
  const attempts = el("ol", {}, ...delivery.attempts.map((attempt) => el("li", {},
    `${when(attempt.attempted_at)}: ${attempt.status_code ? "HTTP " + attempt.status_code : "no answer"}`
    + (attempt.latency_ms !== null ? `, ${Math.round(attempt.latency_ms)} ms` : "")
    + (attempt.error ? ` (${attempt.error})` : ""))));
  return el("tr", {},
    el("td", {}, el("code", {}, delivery.webhook_url)),
    el("td", {}, statusBadge(delivery.status)),
    el("td", {}, el("details", {}, el("summary", {}, `${delivery.attempt_count} attempt(s)`), attempts)),
    el("td", {}, when(delivery.last_attempt_at)),
    el("td", {}, delivery.error_message || "—"));
}

// ---- actions ----

async function cancelJob(jobId, view, state) {
  if (!confirm(`Cancel job ${jobId}? Lots not yet described will not be.`)) return;
  const result = byId("action-result");
  try {
    await api.cancel(jobId);
    say(result, "Job cancelled.");
  } catch (failure) {
    return handleFailure(failure, result);
  }
  await loadJob(jobId, view, state);
}

async function retryFailed(jobId) {
  const result = byId("action-result");
  try {
    const { body } = await api.retryFailed(jobId);
    result.replaceChildren("Failed lots resubmitted as job ", jobLink(body.job_id), ".");
    result.classList.remove("error");
  } catch (failure) {
    // The endpoint is newer than some gateways: a 404 on a job just shown means it is missing.
    if (failure.status === 404) return say(result, "This server cannot retry failed lots yet.", true);
    handleFailure(failure, result);
  }
}

// Asks for a redelivery, then re-reads the deliveries until the new one shows up (or 20 s pass).
async function redeliver(jobId, view) {
  const result = byId("redeliver-result");
  const before = Number(byId("delivery-rows").dataset.total || 0);
  try {
    await api.redeliver(jobId);
  } catch (failure) {
    return handleFailure(failure, result);
  }
  say(result, "Redelivery scheduled.");
  for (let waited = 0; waited < 20000 && view === currentView; waited += 1000) {
    await new Promise((resolve) => setTimeout(resolve, 1000));
    const answer = await loadDeliveries(jobId, view);
    if (answer && answer.pagination && answer.pagination.total > before
        && answer.deliveries.every((d) => d.attempt_count > 0)) {
      return say(result, "Redelivery attempted: see the newest row.");
    }
  }
}

function handleFailure(failure, target) {
  if (failure.status === 401 || failure.status === 403) {
    sessionStorage.removeItem(CREDENTIALS);
    return showLogin("The server no longer accepts this key: sign in again.");
  }
  say(target, failure instanceof ApiError ? failure.message : `Network error: ${failure.message}`, true);
}

// ---- routing: #/jobs?filters, #/jobs/{id}; everything needs credentials first ----

function route() {
  const credentials = savedCredentials();
  if (!credentials) return showLogin();
  byId("nav").hidden = false;
  byId("who").textContent = `Client ${credentials.clientId}`;
  const [path, query = ""] = (location.hash || "#/jobs").slice(1).split("?");
  const job = path.match(/^\/jobs\/([^/]+)$/);
  if (job) return showJob(decodeURIComponent(job[1]));
  return showJobs(new URLSearchParams(query));
}

// Navigates; setting the hash it already has fires no `hashchange`, so route by hand then.
function go(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

byId("sign-out").addEventListener("click", () => {
  sessionStorage.removeItem(CREDENTIALS);
  go("#/jobs");
});
// The skip link moves focus; followed as a link, `#main` was taken for a page: the job on screen
// was replaced by the jobs list, and what was typed in the sign-in form was lost.
document.querySelector(".skip").addEventListener("click", (event) => {
  event.preventDefault();
  byId("main").focus();
});
window.addEventListener("hashchange", route);
route();
