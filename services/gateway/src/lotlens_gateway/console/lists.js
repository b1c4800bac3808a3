// A job's lots and its webhook deliveries, each read a page at a time.

import { api } from "./api.js";
import { byId, el, handleFailure, isShown, safeDescription, statusBadge, when } from "./dom.js";

const LOTS_PER_PAGE = 50;
const MAX_LOTS_PER_READ = 500; // the API's largest `limit`
const DELIVERIES_PER_PAGE = 100;

// Reads the first page of lots (`fromStart`, with the "Only failed lots" filter as it is now)
// or the next one ("Show more"). `lots` holds where the list is: `ids` (the lot ids shown),
// `total` (how many the list had when read), `next` (the next page's offset, null after the
// last), `read` (the latest read: an earlier one's answer, success or failure, is dropped) and
// `running` (the job has not ended: its lots are a snapshot).
export async function loadLots(jobId, view, lots, fromStart, limit = LOTS_PER_PAGE) {
  const onlyFailed = byId("only-failed").checked;
  const query = { limit: String(limit), offset: String(fromStart ? 0 : lots.next) };
  if (onlyFailed) query.status = "failed";
  const read = (lots.read || 0) + 1;
  lots.read = read;
  const more = byId("more-lots");
  more.hidden = true; // one read of a page at a time: a second click would append it twice
  let answer;
  try {
    answer = (await api.lots(jobId, query)).body;
  } catch (failure) {
    // A newer read answers for the list: a late failure wrote over its note, and a late 401/403
    // signed the user out. A failed "Show more" can be pressed again (it stayed hidden for good);
    // after a failed first page the list shown is not the one asked for: Refresh reads it.
    if (!isShown(view) || lots.read !== read) return;
    more.hidden = fromStart || !hasNext(lots);
    return handleFailure(failure, view, "lots-note");
  }
  if (!isShown(view) || lots.read !== read) return;
  if (!fromStart && movedUnder(lots, answer)) {
    // The list changed since its first page (a lot failed while "Only failed lots" was on, or was
    // recorded and moved up): the next offset no longer follows the lots shown, and reading it
    // showed one lot twice and another never. Read the lots shown and a page more again.
    return loadLots(jobId, view, lots, true, Math.min(MAX_LOTS_PER_READ, lots.ids.size + LOTS_PER_PAGE));
  }
  const list = byId("lots");
  if (fromStart) {
    list.replaceChildren();
    lots.ids = new Set();
  }
  list.append(...answer.lots.map(lotItem));
  for (const lot of answer.lots) lots.ids.add(lot.lot_id);
  lots.total = answer.pagination.total;
  lots.next = answer.pagination.next_offset;
  const snapshot = lots.running ? " The job is running: its lots are read again when its status changes, or on Refresh." : "";
  byId("lots-note").textContent =
    `${answer.pagination.total} ${onlyFailed ? "failed " : ""}lots, ${lots.ids.size} shown.${snapshot}`;
  more.hidden = !hasNext(lots);
}

function hasNext(lots) {
  return lots.next !== null && lots.next !== undefined;
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

// The newest page of deliveries (the API lists them oldest first): a redelivery's rows come last,
// and a list cut at the oldest 500 never showed them. Returns the answer shown, or null.
export async function loadDeliveries(jobId, view) {
  let answer;
  try {
    answer = (await api.deliveries(jobId, { limit: String(DELIVERIES_PER_PAGE) })).body;
    const { total } = answer.pagination;
    if (total > DELIVERIES_PER_PAGE && isShown(view)) {
      const newest = { limit: String(DELIVERIES_PER_PAGE), offset: String(total - DELIVERIES_PER_PAGE) };
      answer = (await api.deliveries(jobId, newest)).body;
    }
  } catch (failure) {
    handleFailure(failure, view, "redeliver-result");
    return null;
  }
  if (!isShown(view)) return null;
  const rows = byId("delivery-rows");
  rows.replaceChildren(...answer.deliveries.map(deliveryRow));
  rows.dataset.total = answer.pagination.total;
  if (!answer.deliveries.length) {
    rows.append(el("tr", {}, el("td", { colspan: "5" }, "No deliveries recorded.")));
  } else if (answer.pagination.total > answer.deliveries.length) {
    rows.prepend(el("tr", {}, el("td", { colspan: "5" },
      `The newest ${answer.deliveries.length} of ${answer.pagination.total} deliveries.`)));
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
