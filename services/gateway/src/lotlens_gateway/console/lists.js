// A job's lots and its webhook deliveries, each read a page at a time.

import { api } from "./api.js";
import { byId, el, handleFailure, isShown, safeDescription, statusBadge, when } from "./dom.js";

const LOTS_PER_PAGE = 50;
const DELIVERIES_PER_PAGE = 100;

// Reads the first page of lots (`fromStart`, with the "Only failed lots" filter as it is now)
// or the next one ("Show more"). `lots` holds where the list is: `next` (the next page's offset,
// null after the last), `shown`, `read` (the latest read; an earlier one's answer is dropped),
// `running` (the job has not ended: its lots are a snapshot).
export async function loadLots(jobId, view, lots, fromStart) {
  const onlyFailed = byId("only-failed").checked;
  const query = { limit: String(LOTS_PER_PAGE), offset: String(fromStart ? 0 : lots.next) };
  if (onlyFailed) query.status = "failed";
  const read = (lots.read || 0) + 1;
  lots.read = read;
  byId("more-lots").hidden = true;
  let answer;
  try {
    answer = (await api.lots(jobId, query)).body;
  } catch (failure) {
    return handleFailure(failure, view, "lots-note");
  }
  if (!isShown(view) || lots.read !== read) return;
  const list = byId("lots");
  if (fromStart) {
    list.replaceChildren();
    lots.shown = 0;
  }
  list.append(...answer.lots.map(lotItem));
  lots.shown += answer.lots.length;
  lots.next = answer.pagination.next_offset;
  const snapshot = lots.running ? " The job is running: its lots are read again when its status changes, or on Refresh." : "";
  byId("lots-note").textContent =
    `${answer.pagination.total} ${onlyFailed ? "failed " : ""}lots, ${lots.shown} shown.${snapshot}`;
  byId("more-lots").hidden = lots.next === null || lots.next === undefined;
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
