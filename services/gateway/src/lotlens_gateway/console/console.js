// LotLens console: ES modules, no framework, no build step. This one signs in, lists the jobs and
// routes (#/jobs?filters, #/jobs/{id}); api.js signs the calls, job.js and lists.js are a job's page.
// The key stays in this tab's sessionStorage; every API call is signed here with WebCrypto
// exactly as the SDK signs it, so the API serves the console like any other client.

import { api, forgetKey, keepKey, savedKey } from "./api.js";
import { byId, el, handleFailure, isShown, jobLink, progressBar, say, showPage, statusBadge, when } from "./dom.js";
import { showJob } from "./job.js";

const MAX_PAGE_SIZE = 100; // the listing's largest `limit` (API.md)
const OFFSET_PLACE = "offset:"; // an old link's page among the places of the pages before (`back`)

function showLogin(message = "") {
  byId("nav").hidden = true;
  const view = showPage("login-page");
  const error = byId("login-error");
  say(error, message, true);
  byId("login").addEventListener("submit", async (event) => {
    event.preventDefault();
    const field = byId("client-key");
    const key = field.value;
    field.setAttribute("aria-invalid", String(!key));
    if (!key) {
      field.focus();
      return say(error, "Enter the shared key.", true);
    }
    if (!window.crypto || !crypto.subtle) {
      return say(error, "This browser can sign only on a secure page: open the console over HTTPS (or on localhost).", true);
    }
    // The key alone names the client (the server has no client id to check a typed one against):
    // listing one job proves the key before it is kept.
    try {
      await api.listJobs({ limit: "1" }, key);
    } catch (failure) {
      if (!isShown(view)) return;
      return say(error, failure.status === 403 ? "The server accepts no client with this key." : failure.message, true);
    }
    if (!isShown(view)) return;
    keepKey(key);
    go("#/jobs");
  });
}

async function showJobs(query) {
  const view = showPage("jobs-page");
  const asked = query.get("status") || "";
  const status = offered("status-filter", asked, "");
  const { limit, sizeNote } = pageSize(query.get("limit") || "");
  // The link's place as written: one that is not a number of jobs (`offset=2O`) or not a cursor
  // (cut short, edited by hand) was read as the first page, shown as if asked for. The API refuses
  // it, and so does the page. `offset` is what links made before the cursor carry.
  const cursor = query.get("cursor") || "";
  const askedOffset = query.get("offset") || "0";
  // A status from a hand-edited or old link: the page says it lists every status instead.
  const unknown = status === asked ? "" : `No status “${asked}” is known: jobs of every status. `;
  byId("job-filters").addEventListener("submit", (event) => {
    event.preventDefault();
    go("#/jobs?" + listQuery(byId("status-filter").value, byId("page-size").value));
  });
  const filters = status ? { status } : {};
  const request = { ...filters, limit };
  if (cursor) request.cursor = cursor;
  if (askedOffset !== "0") request.offset = askedOffset;
  let answer, all;
  try {
    // After a cursor the API counts the jobs from there on: the caption's total is of them all.
    const reads = [api.listJobs(request), cursor ? api.listJobs({ ...filters, limit: "1" }) : null];
    [answer, all = answer] = (await Promise.all(reads)).map((read) => read?.body);
  } catch (failure) {
    const refused = isShown(view) && refusedLink(failure, query);
    return refused ? say(byId("jobs-caption"), refused, true) : handleFailure(failure, view, "jobs-caption");
  }
  if (!isShown(view)) return;
  const rows = answer.jobs.map((job) => el("tr", {},
    el("td", {}, jobLink(job.job_id)),
    el("td", {}, statusBadge(job.status)),
    el("td", {}, when(job.created_at)),
    el("td", {}, job.languages.join(", ")),
    el("td", {}, progressBar(job))));
  byId("job-rows").replaceChildren(...rows);
  // No "Jobs 11–20": a page reached by a cursor has no offset, and jobs submitted since the first
  // page would make any offset it claimed wrong.
  const total = all.pagination.total;
  byId("jobs-caption").textContent = unknown + sizeNote + (total
    ? `${answer.jobs.length} of ${total} ${total === 1 ? "job" : "jobs"}, newest first`
    : "No jobs match these filters.");
  // Each page is the one after the previous page's last job, however many jobs arrived since: an
  // offset counted from the newest showed a page's jobs again on the next. The places of the
  // pages before this one ride along in the link (`back`), so Previous works in a shared link as
  // after a walk from the first page (the browser's Back button goes back through the walk).
  // An old link's offset page is one of them (`offset:50`): without it, Previous on the page after
  // it listed the first page.
  const back = query.getAll("back");
  const previous = cursor
    ? place(back.at(-1), back.slice(0, -1))
    : { offset: Math.max(0, Number(askedOffset) - Number(limit)) };
  const first = !cursor && Number(askedOffset) === 0;
  pagerButton("previous-page", !first, listQuery(status, limit, previous));
  const here = cursor || (first ? "" : `${OFFSET_PLACE}${askedOffset}`);
  const next = { cursor: answer.pagination.next_cursor, back: here ? [...back, here] : [] };
  pagerButton("next-page", Boolean(next.cursor), listQuery(status, limit, next));
}

// Selects `value` in the select `id` when it offers it, else `fallback`; returns the one selected.
// A value it lacks left the control blank while the page listed something else.
function offered(id, value, fallback) {
  const select = byId(id);
  select.value = [...select.options].some((option) => option.value === value) ? value : fallback;
  return select.value;
}

// A page size from the link that the API accepts (1 to 100, API.md) is listed, and added to "Per
// page" when it lacks it: `limit=33` listed 25 a page, the select said 25 and its user believed
// they saw 33. Any other size lists 25 a page, and the caption says so.
function pageSize(asked) {
  const select = byId("page-size");
  const size = Number(asked);
  if (!/^\d+$/.test(asked) || size < 1 || size > MAX_PAGE_SIZE) {
    select.value = "25";
    return { limit: "25", sizeNote: asked ? `No page size “${asked}” (1 to ${MAX_PAGE_SIZE}): 25 a page. ` : "" };
  }
  if (![...select.options].some((option) => Number(option.value) === size)) {
    select.add(new Option(String(size)), [...select.options].find((option) => Number(option.value) > size));
  }
  select.value = String(size);
  return { limit: String(size), sizeNote: "" };
}

// What a 422 naming the link's own values (the offset, the cursor) says: which value is refused,
// why, and how to leave it; null for any other failure.
function refusedLink(failure, query) {
  const refused = (failure.details?.errors || []).filter((error) => error.loc?.[0] === "query");
  if (failure.status !== 422 || !refused.length) return null;
  const said = refused.map((error) =>
    `${error.loc[1]} “${query.get(error.loc[1]) ?? ""}”: ${reason(error)}`);
  return `The server refuses this link’s ${said.join("; ")}. Show lists the first page.`;
}

// The API's reason, but for a cursor: its pattern says nothing to a person holding a cut link.
function reason(error) {
  if (error.loc[1] !== "cursor") return error.msg;
  return "the link was cut short or changed (no page of the list starts there)";
}

// A page's place kept in `back`: its cursor, or the offset of an old link's page; none for the first.
function place(kept = "", back = []) {
  if (kept.startsWith(OFFSET_PLACE)) return { offset: Number(kept.slice(OFFSET_PLACE.length)), back };
  return { cursor: kept, back };
}

// The list's address: its filters and its place, a cursor (with the places of the pages before
// it) or, from a link made before the cursor, an offset; neither for the first page.
function listQuery(status, limit, { cursor = "", back = [], offset = 0 } = {}) {
  const query = new URLSearchParams({ limit: String(limit) });
  if (status) query.set("status", status);
  if (cursor) query.set("cursor", cursor);
  for (const earlier of back) query.append("back", earlier);
  if (offset) query.set("offset", String(offset));
  return query.toString();
}

function pagerButton(id, enabled, query) {
  const button = byId(id);
  button.disabled = !enabled;
  button.addEventListener("click", () => go("#/jobs?" + query));
}

// ---- routing: #/jobs?filters, #/jobs/{id}, any other address not found; the key comes first ----

function route() {
  if (!savedKey()) return showLogin();
  byId("nav").hidden = false;
  const [path, query = ""] = (location.hash || "#/jobs").slice(1).split("?");
  if (path === "/jobs" || path === "/") return showJobs(new URLSearchParams(query));
  const job = path.match(/^\/jobs\/([^/]+)$/);
  if (job) {
    let jobId;
    try {
      jobId = decodeURIComponent(job[1]);
    } catch {
      return showPage("missing-page"); // `%E0%A4%A` names no job: it threw a URIError
    }
    return showJob(jobId);
  }
  // A broken link showed the jobs list, and its user believed they were where it pointed.
  return showPage("missing-page");
}

// Navigates; setting the hash it already has fires no `hashchange`, so route by hand then.
function go(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

byId("sign-out").addEventListener("click", () => {
  forgetKey();
  go("#/jobs");
});
// A 401/403 on the page shown (dom.js `handleFailure` has forgotten the key).
window.addEventListener("lotlens:key-refused", () => showLogin("The server no longer accepts this key: sign in again."));
// The skip link moves focus; followed as a link, `#main` was taken for a page: the job on screen
// was replaced by the jobs list, and what was typed in the sign-in form was lost.
document.querySelector(".skip").addEventListener("click", (event) => {
  event.preventDefault();
  byId("main").focus();
});
window.addEventListener("hashchange", route);
route();
