// A job's lots and its webhook deliveries, each read a page at a time.

import { api } from "./api.js";
import { byId, el, handleFailure, isShown, safeDescription, say, statusBadge, when } from "./dom.js";

const LOTS_PER_PAGE = 50;
const MAX_LOTS_PER_READ = 500; // the API's largest `limit`
const READS_WHILE_MOVING = 3; // a list still moving after these is shown, and said to have moved
const DELIVERIES_PER_PAGE = 100;

// How a read of the lots begins: a new list (`FIRST`: the page opened, the filter changed), the
// lots shown read again (`AGAIN`: Refresh, a change of status; as many as are shown, a page at
// least: read from the first page, a user who had shown them all saw 50 again), or the next page.
export const FIRST = "first", AGAIN = "again", MORE = "more";

// Reads the lots (with the "Only failed lots" filter as it is now). `lots` holds where the list
// is: `ids` (the lot ids shown), `total` (how many the list had when read; null when it changed
// while being read), `next` (the next page's offset, null after the last), `read` (the latest
// read: an earlier one's answer, success or failure, is dropped), `fromTop` (the latest read of
// all the lots shown, not a page more), `moreAsked` (a Show more on its way, and whether the
// keyboard was on its button) and `running` (the job has not ended: its lots are a snapshot).
export async function loadLots(jobId, view, lots, how) {
  const filter = byId("only-failed").checked ? { status: "failed" } : {};
  const read = lots.read + 1;
  lots.read = read;
  if (how !== MORE) lots.fromTop = read; // the lots shown all read afresh (Show more reads a page)
  const current = () => isShown(view) && lots.read === read;
  const more = byId("more-lots");
  // A re-read (a change of status, Refresh) overtaking a Show more answers for it: the page it
  // asked comes with the lots shown, and the keyboard goes where it would have (dropped, the
  // list stayed as it was and the focus on the page's body).
  // Kept until a read answers: a second re-read overtaking the first answers for it too.
  const overtaken = how === AGAIN ? lots.moreAsked : null;
  // WCAG 2.4.3: hiding the focused button dropped the focus to the page's body, far from the
  // lots it adds; the first of them takes it (or the button again, when shown after a failure).
  // Handed over by an overtaken Show more only while nothing else has it (a Refresh button).
  const keyboardHere = how === MORE ? document.activeElement === more
    : Boolean(overtaken?.keyboard) && [more, document.body, null].includes(document.activeElement);
  lots.moreAsked = how === MORE ? { keyboard: keyboardHere } : overtaken;
  more.hidden = true; // one read of a page at a time: a second click would append it twice
  let found;
  try {
    if (how === MORE) found = await readMore(jobId, filter, lots, current);
    else if (how === AGAIN) found = await readAgain(jobId, filter, shownAgain(lots, overtaken), current);
    else found = pageFound(await readPage(jobId, filter, 0, LOTS_PER_PAGE), true);
  } catch (failure) {
    // A newer read answers for the list: a late failure wrote over its note, and a late 401/403
    // signed the user out. A failed "Show more" can be pressed again (it stayed hidden for good),
    // as can one under lots that failed to be read again; after a failed first page the list shown
    // is not the one asked for: Refresh reads it.
    if (!current()) return;
    lots.moreAsked = null;
    more.hidden = how === FIRST || !canReadMore(lots);
    if (keyboardHere && !more.hidden) more.focus();
    return handleFailure(failure, view, "lots-note");
  }
  if (!current()) return;
  lots.moreAsked = null;
  const list = byId("lots");
  const shown = lots.ids ?? new Set();
  const firstAdded = found.lots.findIndex((lot) => !shown.has(lot.lot_id));
  if (found.fromStart) {
    list.replaceChildren();
    lots.ids = new Set();
  }
  const items = found.lots.map(lotItem);
  list.append(...items);
  for (const lot of found.lots) lots.ids.add(lot.lot_id);
  Object.assign(lots, { total: found.total, next: found.next, answered: read,
    said: `${found.said} ${filter.status ? "failed " : ""}lots` });
  sayLots(lots);
  more.hidden = !canReadMore(lots);
  if (keyboardHere) keepKeyboard(items[firstAdded], more);
}

// How many lots a re-read reads: as many as are shown (a page at least), and the page a Show more
// it overtook asked for.
function shownAgain(lots, overtaken) {
  return Math.max(LOTS_PER_PAGE, (lots.ids?.size ?? 0) + (overtaken ? LOTS_PER_PAGE : 0));
}

// The focus that was on "Show more lots" goes to the heading of the first lot it added (focusable
// by script only), or back to the button when it added none and is shown again.
function keepKeyboard(added, more) {
  if (!added) return more.hidden ? undefined : more.focus();
  const heading = added.querySelector("h3");
  heading.tabIndex = -1;
  heading.focus();
}

// The note under the lots: how many the list has and shows, whether it moved while it was read,
// and whether they are a snapshot of a running job. Said by the latest read once it succeeded: a
// read on its way will say it, and a failed one's message stays.
export function sayLots(lots) {
  if (lots.answered !== lots.read) return;
  const snapshot = lots.running ? " The job is running: its lots are read again when its status changes, or on Refresh." : "";
  const moved = lots.total === null ? " The list changed while it was read and may lack a lot: Show more lots reads it again." : "";
  byId("lots-note").textContent = `${lots.said}, ${lots.ids.size} shown.${moved}${snapshot}`;
}

function readPage(jobId, filter, offset, limit) {
  return api.lots(jobId, { ...filter, limit: String(limit), offset: String(offset) }).then((answer) => answer.body);
}

// What a read found: the lots to show, whether they replace the list, the total to compare the
// next page with, the total to say, and the next page's offset.
function pageFound(answer, fromStart) {
  const { total, next_offset: next } = answer.pagination;
  return { lots: answer.lots, fromStart, total, said: total, next };
}

// The next page; when the list changed since its first page (a lot failed while "Only failed lots"
// was on, or was recorded and moved up), the next offset no longer follows the lots shown (reading
// it showed one lot twice and another never), so the lots shown and a page more are read again.
// A list that changed while it was read again (`total` null) is read again from its first page.
async function readMore(jobId, filter, lots, current) {
  if (lots.total !== null) {
    const answer = await readPage(jobId, filter, lots.next, LOTS_PER_PAGE);
    if (!movedUnder(lots, answer) || !current()) return pageFound(answer, false);
  }
  return readAgain(jobId, filter, lots.ids.size + LOTS_PER_PAGE, current);
}

// The first `wanted` lots, read again while the list moves under the reading, a few times at most:
// one read that moved lacked the lot that moved (its next page repeated one lot instead).
async function readAgain(jobId, filter, wanted, current) {
  let found = await readFirst(jobId, filter, wanted, current);
  for (let reads = 1; found.total === null && reads < READS_WHILE_MOVING && current(); reads += 1) {
    found = await readFirst(jobId, filter, wanted, current);
  }
  return found;
}

// The first `wanted` lots (fewer if the list has fewer), page by page from the first, following
// next_offset: one read of `wanted` stalled at the API's 500 (every click read the same 500 while
// lots kept failing), and an answer the gateway's byte cap cut short replaced the list with fewer
// lots than it showed. A lot that moves before the page being read (it failed, or was recorded)
// moves the lots after it on by one: the next page repeats a lot, and the one that moved is not
// read (`total` null). Lots failing past the page being read change the total and miss nothing.
async function readFirst(jobId, filter, wanted, current) {
  const ids = new Set();
  const lots = [];
  let offset = 0;
  let answer;
  let moved = false;
  while (ids.size < wanted && hasOffset(offset) && current()) {
    answer = await readPage(jobId, filter, offset, Math.min(MAX_LOTS_PER_READ, wanted - ids.size));
    for (const lot of answer.lots) {
      if (ids.has(lot.lot_id)) moved = true; // an earlier page's lot moved into this one
      else lots.push(lot);
      ids.add(lot.lot_id);
    }
    offset = answer.pagination.next_offset;
    if (!answer.lots.length) break; // a list ending sooner than its offsets said
  }
  const { total } = answer.pagination;
  return { lots, fromStart: true, total: moved ? null : total, said: total, next: offset };
}

function hasOffset(offset) {
  return offset !== null && offset !== undefined;
}

// A next page, or lots shown that may lack one (the list moved while it was read).
function canReadMore(lots) {
  return hasOffset(lots.next) || lots.total === null;
}

// Whether the lots matching the list changed since it was read: another total, or a lot already
// shown in the next page (the lots before its offset moved).
function movedUnder(lots, answer) {
  return answer.pagination.total !== lots.total || answer.lots.some((lot) => lots.ids.has(lot.lot_id));
}

export function usageValue(kind, value) {
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

function lotItem(lot) {
  const item = el("li", { class: "lot" },
    el("h3", {}, "Lot ", el("code", {}, lot.lot_id), " ", statusBadge(lot.status)),
    el("p", {}, `${lot.processed_images} image(s) described.`));
  if (lot.usage) item.append(el("p", {}, lotUsage(lot.usage)));
  if (lot.error_message) item.append(el("p", { class: "reason" }, el("strong", {}, "Reason: "), lot.error_message));
  // A failed lot's `descriptions` are empty; one whose translation failed keeps its English (and
  // the languages translated before) in `partial_descriptions`, shown below under this line.
  if (lot.missing_languages && lot.missing_languages.length) {
    item.append(el("p", {}, `Not described in: ${lot.missing_languages.join(", ")}.`));
  }
  const partial = lot.partial_descriptions || [];
  if (partial.length) item.append(el("p", { class: "partial" }, "Kept though the lot failed:"));
  if (lot.missing_images.length) {
    item.append(el("p", {}, "Missing images:"),
      el("ul", { class: "missing" }, ...lot.missing_images.map((url) => el("li", {}, el("code", {}, url)))));
  }
  for (const description of [...lot.descriptions, ...partial]) {
    // `dir="auto"`: an Arabic or Hebrew description takes its direction from its own text; in this
    // left-to-right page its clauses and its full stop were laid out in the wrong order.
    const block = el("div", { class: "damages", dir: "auto" }, safeDescription(description.damages));
    // A tag the browser rejects must not break the page: `lang` is only set when it looks like BCP 47.
    if (/^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$/.test(description.language)) block.setAttribute("lang", description.language);
    item.append(el("section", { class: "description" }, el("h4", {}, description.language), block));
  }
  return item;
}

// The newest page of deliveries (the API lists them oldest first): a redelivery's rows come last,
// and a list cut at the oldest 500 never showed them. `deliveries.read` is the latest read: an
// earlier one's answer, success or failure, is dropped (a Refresh answered after Redeliver's
// re-reads put the list back as it was before the redelivery).
export async function loadDeliveries(jobId, view, deliveries) {
  const read = (deliveries.read || 0) + 1;
  deliveries.read = read;
  const current = () => isShown(view) && deliveries.read === read;
  let answer;
  try {
    answer = (await api.deliveries(jobId, { limit: String(DELIVERIES_PER_PAGE) })).body;
    const { total } = answer.pagination;
    if (total > DELIVERIES_PER_PAGE && current()) {
      const newest = { limit: String(DELIVERIES_PER_PAGE), offset: String(total - DELIVERIES_PER_PAGE) };
      answer = (await api.deliveries(jobId, newest)).body;
    }
  } catch (failure) {
    if (current()) handleFailure(failure, view, "redeliver-result");
    return;
  }
  if (!current()) return;
  noteSettling(deliveries, answer);
  const rows = byId("delivery-rows");
  // Read again at each poll while a webhook is on its way: the attempts a user opened stay open,
  // and a focused row keeps the focus (a keyboard user was sent back to the top every 2 s).
  const opened = new Set([...rows.querySelectorAll("details[open]")].map((details) => details.dataset.delivery));
  const focused = rows.contains(document.activeElement) ? document.activeElement.closest("details") : null;
  rows.replaceChildren(...answer.deliveries.map((delivery) => deliveryRow(delivery, opened)));
  if (focused) rows.querySelector(`details[data-delivery="${CSS.escape(focused.dataset.delivery)}"] summary`)?.focus();
  rows.dataset.total = answer.pagination.total;
  if (!answer.deliveries.length) {
    rows.append(el("tr", {}, el("td", { colspan: "5" }, "No deliveries recorded.")));
  } else if (answer.pagination.total > answer.deliveries.length) {
    rows.prepend(el("tr", {}, el("td", { colspan: "5" },
      `The newest ${answer.deliveries.length} of ${answer.pagination.total} deliveries.`)));
  }
}

// Whether the deliveries may still change (`unsettled`): none is recorded yet (a job's webhooks go
// once it has ended), one is pending (between retries), or a redelivery's rows (`awaited`, the
// total that has them) have not come; and what they are (`seen`: the job's page reads them less
// often while it stays the same). Says when a redelivery's rows have been tried.
function noteSettling(deliveries, answer) {
  const { total } = answer.pagination;
  deliveries.seen = JSON.stringify([total, answer.deliveries.map((d) => [d.id, d.status, d.attempt_count])]);
  const awaited = deliveries.awaited || 0;
  deliveries.unsettled = !total || total < awaited || answer.deliveries.some((delivery) => delivery.status === "pending");
  if (awaited && total >= awaited && answer.deliveries.every((delivery) => delivery.attempt_count > 0)) {
    deliveries.awaited = 0;
    say(byId("redeliver-result"), "Redelivery attempted: see the newest row.");
  }
}

function deliveryRow(delivery, opened) {
  const attempts = el("ol", {}, ...delivery.attempts.map((attempt) => el("li", {},
    `${when(attempt.attempted_at)}: ${attempt.status_code ? "HTTP " + attempt.status_code : "no answer"}`
    + (attempt.latency_ms !== null ? `, ${Math.round(attempt.latency_ms)} ms` : "")
    + (attempt.error ? ` (${attempt.error})` : ""))));
  return el("tr", {},
    el("td", {}, el("code", {}, delivery.webhook_url)),
    el("td", {}, statusBadge(delivery.status)),
    el("td", {}, el("details", { "data-delivery": delivery.id, ...(opened.has(delivery.id) ? { open: "" } : {}) },
      el("summary", {}, `${delivery.attempt_count} attempt(s)`), attempts)),
    el("td", {}, when(delivery.last_attempt_at)),
    el("td", {}, delivery.error_message || "—"));
}
