// The public API as the console calls it: the key from this tab's sessionStorage, every call
// signed with WebCrypto exactly as the SDK signs it, so the API serves the console like any client.

const API = "/api/v1";
const CREDENTIALS = "lotlens.console.credentials";

export function savedKey() {
  const raw = sessionStorage.getItem(CREDENTIALS);
  return raw ? JSON.parse(raw).key : null;
}

export function keepKey(key) {
  sessionStorage.setItem(CREDENTIALS, JSON.stringify({ key }));
}

export function forgetKey() {
  sessionStorage.removeItem(CREDENTIALS);
}

async function hmacHex(key, message) {
  const encoder = new TextEncoder();
  const cryptoKey = await crypto.subtle.importKey(
    "raw", encoder.encode(key), { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  const mac = await crypto.subtle.sign("HMAC", cryptoKey, encoder.encode(message));
  return Array.from(new Uint8Array(mac), (byte) => byte.toString(16).padStart(2, "0")).join("");
}

export class ApiError extends Error {
  constructor(status, body, retryAfterS) {
    const detail = body && body.message ? body.message : `HTTP ${status}`;
    super(body && body.code ? `${detail} (${body.code})` : detail);
    this.status = status;
    this.code = body && body.code;
    this.details = body && body.details; // a 422's `errors` name the refused parameters
    this.retryAfterS = retryAfterS; // from `Retry-After`, null when absent
  }
}

// `Retry-After` is seconds or an HTTP date (RFC 9110 10.2.3); null when absent or unreadable.
function retryAfterSeconds(header) {
  if (!header) return null;
  if (/^\d+$/.test(header.trim())) return Number(header);
  const at = Date.parse(header);
  return Number.isNaN(at) ? null : Math.max(0, (at - Date.now()) / 1000);
}

// Calls the API with `X-Signature: sha256=<hex>` over `signedText`; anything outside 2xx becomes
// an ApiError (a network failure stays the TypeError fetch throws).
async function signedRequest(method, path, signedText, key = savedKey()) {
  const signature = "sha256=" + await hmacHex(key, signedText);
  const response = await fetch(path, { method, headers: { "X-Signature": signature, Accept: "application/json" } });
  const body = await response.json().catch(() => null);
  if (!response.ok) throw new ApiError(response.status, body, retryAfterSeconds(response.headers.get("Retry-After")));
  return { status: response.status, body };
}

function jobPath(id, tail = "", query = {}) {
  const raw = new URLSearchParams(query).toString();
  return `${API}/batch-jobs/${encodeURIComponent(id)}${tail}${raw ? "?" + raw : ""}`;
}

// The contract signs the raw query string of the listing and the job id of every other call.
export const api = {
  listJobs: (query, key) => {
    const raw = new URLSearchParams(query).toString();
    return signedRequest("GET", `${API}/batch-jobs${raw ? "?" + raw : ""}`, raw, key);
  },
  jobStatus: (id) => signedRequest("GET", `${API}/batch-status/${encodeURIComponent(id)}`, id),
  // One page of lots (`status`, `limit`, `offset`), running jobs too: never the whole results
  // document, which for a big job is hundreds of megabytes held in the tab.
  lots: (id, query) => signedRequest("GET", jobPath(id, "/lots", query), id),
  deliveries: (id, query) => signedRequest("GET", jobPath(id, "/webhooks", query), id),
  redeliver: (id) => signedRequest("POST", jobPath(id, "/webhooks/redeliver"), id),
  cancel: (id) => signedRequest("POST", jobPath(id, "/cancel"), id),
  retryFailed: (id) => signedRequest("POST", jobPath(id, "/retry-failed"), id),
};
