// Small DOM helpers and the safe rendering of the model's HTML (nothing from the API is ever
// parsed as HTML into the page), and the view counter every answer is checked against.

import { ApiError, forgetKey } from "./api.js";

// Model-written description HTML is rebuilt from these elements only, with no attributes.
const ALLOWED_TAGS = new Set(["p", "ul", "ol", "li", "b", "strong", "i", "em", "br"]);
const XHTML = "http://www.w3.org/1999/xhtml";
// Elements whose content is not readable text: dropped whole rather than unwrapped.
const DROPPED_TAGS = new Set(["script", "style", "template", "noscript", "iframe", "object",
  "embed", "textarea", "select", "title", "head"]);

const main = document.getElementById("main");
let currentView = 0; // bumped on each navigation: an answer for an earlier view changes nothing

export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  node.append(...children.filter((child) => child !== null && child !== undefined));
  return node;
}

export function byId(id) {
  return document.getElementById(id);
}

// Shows a page's template, titled `title` (its heading's text by default), and returns its view
// number, for `isShown`.
export function showPage(templateId, title = null) {
  currentView += 1;
  main.replaceChildren(byId(templateId).content.cloneNode(true));
  const heading = main.querySelector("h1");
  // WCAG 2.4.2: every page was "LotLens console", in the tab strip, the history and what a
  // screen reader says on arrival.
  document.title = `${title ?? heading.textContent.trim()} – LotLens console`;
  // Move focus to the new heading so keyboard and screen-reader users start at the top.
  heading.focus();
  return currentView;
}

// Whether `view` is still on screen: an answer that arrives after the user left is dropped.
export function isShown(view) {
  return view === currentView;
}

export function when(iso) {
  return iso ? iso.replace("T", " ").replace(/\.\d+/, "").replace(/(\+00:00|Z)$/, " UTC") : "—";
}

export function say(target, message, isError = false) {
  target.textContent = message;
  target.classList.toggle("error", isError);
}

export function failureText(failure) {
  return failure instanceof ApiError ? failure.message : `Network error: ${failure.message}`;
}

// A refused key signs out (a 401/403 on the page shown); other failures are said in `targetId`.
// A failure of a view the user has left changes nothing: its elements are gone (that threw a
// TypeError), and a stale 401/403 signed the user out of the page they had moved to.
export function handleFailure(failure, view, targetId) {
  if (!isShown(view)) return;
  if (failure.status === 401 || failure.status === 403) {
    forgetKey();
    window.dispatchEvent(new CustomEvent("lotlens:key-refused"));
    return;
  }
  say(byId(targetId), failureText(failure), true);
}

export function progressBar(job) {
  const p = job.progress;
  const text = `${p.processed_lots} of ${p.total_lots} lots described, ${p.failed_lots} failed (${p.completion_percentage}%)`;
  const bar = el("progress", { max: "100", value: String(p.completion_percentage), "aria-label": `Progress of job ${job.job_id}` });
  return el("span", { class: "progress" }, bar, el("span", {}, text));
}

export function jobLink(jobId) {
  return el("a", { href: `#/jobs/${encodeURIComponent(jobId)}` }, el("code", {}, jobId));
}

export function statusBadge(status) {
  return el("span", { class: `badge status-${status}` }, status);
}

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
