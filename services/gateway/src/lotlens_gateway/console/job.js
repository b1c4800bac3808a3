// A job's page: its status read again while it runs (polls that outlive a failure), its usage,
// and the actions on it; its lots and webhook deliveries are in lists.js.

import { api, ApiError } from "./api.js";
import { byId, el, failureText, handleFailure, isShown, jobLink, progressBar, say, showPage, statusBadge, when } from "./dom.js";
import { AGAIN, FIRST, loadDeliveries, loadLots, MORE, sayLots, usageValue } from "./lists.js";

const TERMINAL = new Set(["completed", "failed", "cancelled"]);
const POLL_MS = 2000;
const MAX_RETRY_MS = 60000;
const SLOWEST_WEBHOOK_POLL_MS = 60000; // an ended job's deliveries, unchanged for a while
const WEBHOOK_WAIT_MS = 30 * 60000; // how long an ended job's unsettled deliveries are followed
const RETRY_ASKS = 4; // retry-failed: the first call and three more while another makes the retry
const ENDING_ASKS = 12; // redeliver: about a minute, at the gateway's 5 s, for a cancel to be recorded
const IN_PROGRESS_WAIT_S = 5; // the gateway's `Retry-After` on a retry being made, or a job's end recorded
const WAITED_OUT = "Updates paused after 30 minutes of waiting for this job's webhooks: "
  + "press Resume updates to follow them again, or Refresh to read them once.";

export async function showJob(jobId) {
  const view = showPage("job-page", `Job ${jobId}`);
  byId("job-id").textContent = jobId;
  // `settled`: the job has ended and so have its deliveries; nothing on the page changes any more.
  // `owed`: a poll fell due while the tab was hidden. `note`: the page's own note on the action line.
  const state = { status: null, poll: null, paused: false, failedReads: 0, read: 0, listsDueSince: null,
    retrying: false, redelivering: false, settled: false, owed: false, note: "", lots: { read: 0, fromTop: 0 }, deliveries: {} };
  byId("refresh-job").addEventListener("click", () => {
    state.wait = null; // the user is here: follow the webhooks closely again
    loadJob(jobId, view, state, true);
  });
  byId("pause-updates").addEventListener("click", () => togglePause(jobId, view, state));
  byId("cancel-job").addEventListener("click", () => cancelJob(jobId, view, state));
  byId("retry-failed").addEventListener("click", () => retryFailed(jobId, view, state));
  byId("redeliver").addEventListener("click", () => redeliver(jobId, view, state));
  byId("only-failed").addEventListener("change", () => loadLots(jobId, view, state.lots, FIRST));
  byId("more-lots").addEventListener("click", () => loadLots(jobId, view, state.lots, MORE));
  // Removed by the first event after the user has left the page (one listener per page opened).
  const shown = () => {
    if (!isShown(view)) return document.removeEventListener("visibilitychange", shown);
    if (document.visibilityState === "visible" && state.owed) loadJob(jobId, view, state);
  };
  document.addEventListener("visibilitychange", shown);
  await loadJob(jobId, view, state, true);
}

// Reads the status; a running job is read again every 2 s until it ends, and an ended one, ever
// less often, while its webhooks are on their way. Its lots are read when the page opens, when
// the status changes and on Refresh (as many as are shown, not at every poll); its deliveries then
// once it has ended, and at each poll while one is awaited or pending: webhooks go after the job
// ends and are retried for hours (the page said "No deliveries recorded." until Refresh). One
// poll is pending at most: Refresh, Cancel and a poll each read now and replace the pending one
// (each used to start a loop of its own). Only the latest read's answer counts: a poll sent
// before Cancel and answered after it drew the job running again.
async function loadJob(jobId, view, state, readLists = false) {
  clearTimeout(state.poll);
  state.owed = false;
  const read = ++state.read;
  const lotsAsked = state.lots.fromTop;
  // Owed until a read succeeds: a failed Refresh's lists were never read (the poll that then
  // succeeded found the status unchanged). `listsDueSince`: the lots' reads from the top by then.
  if (readLists) state.listsDueSince = lotsAsked;
  let job;
  try {
    job = (await api.jobStatus(jobId)).body;
  } catch (failure) {
    if (read === state.read) readFailed(failure, jobId, view, state);
    return;
  }
  if (!isShown(view) || read !== state.read) return;
  if (state.failedReads) noteOver(state); // the read that failed is behind us
  state.failedReads = 0;
  const changed = job.status !== state.status;
  state.status = job.status;
  renderSummary(job);
  announceChange(job, state);
  const terminal = TERMINAL.has(job.status);
  state.lots.running = !terminal;
  byId("cancel-job").disabled = terminal;
  byId("retry-failed").disabled = !terminal || job.progress.failed_lots === 0;
  byId("redeliver").disabled = !terminal || !job.webhook_configured;
  if (!terminal) {
    byId("pause-updates").hidden = false;
    schedulePoll(jobId, view, state, POLL_MS);
  }
  const listsDue = state.listsDueSince !== null || changed;
  // Lots read afresh from the top since the change was asked about or the lists fell due (the
  // user's filter) are as new as this answer: read again, the list went back to its first page
  // under the user's Show more (a first status answered late on a loaded server). A Show more
  // alone reads one page more: the lots above it are as old as before.
  const unread = (since) => since === state.lots.fromTop;
  const lotsDue = unread(state.listsDueSince) || (changed && unread(lotsAsked));
  state.listsDueSince = null;
  if (listsDue && !lotsDue) sayLots(state.lots); // whether the job still runs
  await Promise.all([lotsDue ? loadLots(jobId, view, state.lots, AGAIN) : null,
    terminal && (listsDue || state.deliveries.unsettled) ? loadDeliveries(jobId, view, state.deliveries) : null]);
  if (!terminal || !isShown(view) || read !== state.read) return;
  state.settled = !(job.webhook_configured && state.deliveries.unsettled);
  byId("pause-updates").hidden = state.settled;
  if (!state.settled) awaitWebhooks(jobId, view, state);
  else resumeAfterWait(state); // a Refresh found them settled: no pause, nor its note, is left
}

// A job's webhooks may take hours (a failing endpoint is retried for ~4 h) or never come (the
// dispatcher's backlog, a dead-lettered JobCompleted): read every 2 s, each open tab spent 60-90
// of the client's 1000 polling requests a minute for as long as it stayed open, and some fifteen
// tabs pushed the client's own polls into 429s. While the deliveries stay as they were, the reads
// come 2 s doubling to a minute apart (a change, or the user's Refresh, Resume or Redeliver, starts
// again at 2 s), and they stop after 30 minutes as if paused: Resume updates or Refresh reads again.
function awaitWebhooks(jobId, view, state) {
  const { seen } = state.deliveries;
  const now = Date.now();
  if (!state.wait) state.wait = { since: now, seen, delayMs: POLL_MS };
  else if (state.wait.seen !== seen) Object.assign(state.wait, { seen, delayMs: POLL_MS });
  else state.wait.delayMs = Math.min(SLOWEST_WEBHOOK_POLL_MS, state.wait.delayMs * 2);
  if (!waitedOut(state)) schedulePoll(jobId, view, state, state.wait.delayMs);
}

// Whether the 30 minutes of following an ended job's webhooks are over; the updates then pause
// themselves. Asked after a failed read too: checked only after a read that succeeded, a client
// at its polling limit (429, the case the wait is for) had every open tab read on once a minute.
function waitedOut(state) {
  if (!state.wait || Date.now() - state.wait.since < WEBHOOK_WAIT_MS) return false;
  if (state.paused) return true;
  setPaused(state, true);
  state.waitedOut = true;
  pageNote(state, WAITED_OUT);
  return true;
}

// A tab in the background reads nothing: its poll falls due and is owed (`state.owed`) until the
// tab is shown again, and read then at once (hidden tabs read every 2 s for as long as they stayed
// open). The time hidden counts towards the 30 minutes of following an ended job's webhooks.
function schedulePoll(jobId, view, state, delayMs) {
  clearTimeout(state.poll);
  if (state.paused) return;
  state.poll = setTimeout(() => {
    if (!isShown(view)) return;
    if (document.visibilityState === "hidden") state.owed = true;
    else loadJob(jobId, view, state);
  }, delayMs);
}

// A busy or unreachable server (429, 5xx, a dropped connection) is read again after its
// `Retry-After`, or after a pause that doubles with each failure: the first failure used to
// end the updates for good while the page still offered "Pause updates".
function readFailed(failure, jobId, view, state) {
  if (!isShown(view)) return;
  const transient = !(failure instanceof ApiError) || failure.status === 429 || failure.status >= 500;
  if (!transient || state.settled) return handleFailure(failure, view, "action-result");
  waitedOut(state); // over: paused, the failure says so and no read is set up
  state.failedReads += 1;
  const backoffMs = Math.min(MAX_RETRY_MS, POLL_MS * 2 ** state.failedReads);
  const waitMs = failure.retryAfterS != null ? Math.min(MAX_RETRY_MS, failure.retryAfterS * 1000) : backoffMs;
  const again = state.paused ? "Press Refresh or resume updates to read it again." : `Reading it again in ${Math.ceil(waitMs / 1000)} s.`;
  pageNote(state, `Could not read the job's status: ${failureText(failure)}. ${again}`, true);
  schedulePoll(jobId, view, state, waitMs);
}

// WCAG 2.2.2: a page that updates itself can be held still (Refresh still reads once).
function togglePause(jobId, view, state) {
  setPaused(state, !state.paused);
  if (state.paused) return;
  resumeAfterWait(state);
  loadJob(jobId, view, state);
}

function setPaused(state, paused) {
  state.paused = paused;
  const button = byId("pause-updates");
  button.setAttribute("aria-pressed", String(paused));
  button.textContent = paused ? "Resume updates" : "Pause updates";
  if (paused) clearTimeout(state.poll);
}

// The user is back: the webhooks are followed closely again, and a pause that waiting for them
// made (not the user's own) is lifted.
function resumeAfterWait(state) {
  state.wait = null;
  if (!state.waitedOut) return;
  state.waitedOut = false;
  setPaused(state, false);
  noteOver(state);
}

// The action line says what an action did (Cancel, Retry failed lots) or, in a note of the page's
// own (`state.note`), why it is not updating (a read that failed, the pause after 30 minutes).
function pageNote(state, message, isError = false) {
  say(byId("action-result"), message, isError);
  state.note = message;
}

// A note that no longer holds gives way to the pause's, if that still holds, or to nothing; an
// action's result written since stays: Resume emptied the line, and "Failed lots resubmitted as
// job X" written just before went with the new job's id. After failed reads under the pause, a
// Refresh that succeeded left the page paused with no word of it.
function noteOver(state) {
  if (!state.note || byId("action-result").textContent !== state.note) return;
  pageNote(state, state.waitedOut ? WAITED_OUT : "");
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

// ---- actions ----

async function cancelJob(jobId, view, state) {
  if (!confirm(`Cancel job ${jobId}? Lots not yet described will not be.`)) return;
  try {
    await api.cancel(jobId);
  } catch (failure) {
    return handleFailure(failure, view, "action-result");
  }
  if (!isShown(view)) return;
  const result = byId("action-result");
  say(result, "Job cancelled.");
  // WCAG 2.4.3: the Cancel button is disabled next, which drops the focus to the top of the page.
  result.focus();
  await loadJob(jobId, view, state);
}

async function retryFailed(jobId, view, state) {
  if (state.retrying) return; // one call at a time, its waits included
  state.retrying = true;
  try {
    // The job's status names its retry (`retried_as`) from the call's answer on; an ended job is
    // not polled, and its summary lacked the link until Refresh.
    if (await askRetry(jobId, view)) await loadJob(jobId, view, state);
  } finally {
    state.retrying = false;
  }
}

// A 409 IDEMPOTENCY_KEY_IN_PROGRESS means another call (another tab, or an earlier click whose
// answer was lost) is making the retry: asked again after its `Retry-After`, as the SDK does,
// a few times, it names that call's job. It used to be shown as an error. True once it has.
async function askRetry(jobId, view) {
  const result = byId("action-result");
  for (let ask = 1; ; ask += 1) {
    let body;
    try {
      body = (await api.retryFailed(jobId)).body;
    } catch (failure) {
      if (!isShown(view)) return;
      const waitS = failure.retryAfterS ?? IN_PROGRESS_WAIT_S;
      if (failure.code === "IDEMPOTENCY_KEY_IN_PROGRESS" && ask < RETRY_ASKS && waitS <= MAX_RETRY_MS / 1000) {
        say(result, `The retry is being made by another request: asking again in ${Math.ceil(waitS)} s.`);
        await new Promise((resolve) => setTimeout(resolve, waitS * 1000));
        if (!isShown(view)) return;
        continue;
      }
      // An older gateway has no such route (404 NOT_FOUND); a 404 naming the job is about the job.
      if (failure.status === 404 && failure.code === "NOT_FOUND") {
        return say(result, "This server cannot retry failed lots yet.", true);
      }
      return handleFailure(failure, view, "action-result");
    }
    if (!isShown(view)) return;
    result.replaceChildren("Failed lots resubmitted as job ", jobLink(body.job_id), ".");
    result.classList.remove("error");
    return true;
  }
}

// Asks for a redelivery; the polls read the deliveries until its rows have come and been tried.
// Right after a cancel the gateway answers 409 JOB_ENDING until the job's end is recorded
// (seconds): asked again after its `Retry-After`, for about a minute, instead of shown as an error.
async function redeliver(jobId, view, state) {
  if (state.redelivering) return; // one call at a time, its waits included
  state.redelivering = true;
  try {
    await askRedelivery(jobId, view, state);
  } finally {
    state.redelivering = false;
  }
}

async function askRedelivery(jobId, view, state) {
  const result = byId("redeliver-result");
  const before = Number(byId("delivery-rows").dataset.total || 0);
  for (let ask = 1; ; ask += 1) {
    try {
      await api.redeliver(jobId);
      break;
    } catch (failure) {
      if (!isShown(view)) return;
      const waitS = failure.retryAfterS ?? IN_PROGRESS_WAIT_S;
      if (failure.code === "JOB_ENDING" && ask < ENDING_ASKS && waitS <= MAX_RETRY_MS / 1000) {
        say(result, `The job's end is still being recorded: asking again in ${Math.ceil(waitS)} s.`);
        await new Promise((resolve) => setTimeout(resolve, waitS * 1000));
        if (!isShown(view)) return;
        continue;
      }
      return handleFailure(failure, view, "redeliver-result");
    }
  }
  if (!isShown(view)) return;
  say(result, "Redelivery scheduled.");
  Object.assign(state.deliveries, { awaited: before + 1, unsettled: true });
  resumeAfterWait(state);
  await loadJob(jobId, view, state);
}
