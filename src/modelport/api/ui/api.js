// The JSON API client of the dashboard: every call goes to /api/v1 with the bearer key held in
// sessionStorage (never in a URL). Errors become ApiError with the API's own {code, message}.

const KEY = "modelport.key";
// the API lives beside /ui on the same origin (under a stage path too): ../api/v1 from /ui/
export const API_BASE = new URL("../api/v1", document.baseURI).pathname;

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export const session = {
  get key() { return sessionStorage.getItem(KEY); },
  signIn(key) { sessionStorage.setItem(KEY, key); },
  signOut() { sessionStorage.removeItem(KEY); },
};

let onUnauthorized = () => {};
export function whenUnauthorized(handler) { onUnauthorized = handler; }

function newIdempotencyKey() {
  return (crypto.randomUUID && crypto.randomUUID()) || `${Date.now()}-${Math.random()}`;
}

export async function api(method, path, body, { quiet401 = false } = {}) {
  const headers = { Accept: "application/json" };
  if (session.key) headers.Authorization = `Bearer ${session.key}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method === "POST") headers["Idempotency-Key"] = newIdempotencyKey();
  let response;
  try {
    response = await fetch(API_BASE + path, {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: "no-store",
    });
  } catch (err) {
    throw new ApiError(0, "network_error", `the API could not be reached (${err.message})`);
  }
  if (response.status === 204) return null;
  let data = null;
  try { data = await response.json(); } catch { /* not JSON */ }
  if (!response.ok) {
    const code = (data && data.code) || "error";
    const message = (data && data.message) || `${response.status} ${response.statusText}`;
    if (response.status === 401 && !quiet401) onUnauthorized(message);
    throw new ApiError(response.status, code, message);
  }
  return data;
}

/** Every item of a paged list (``{"items", "next_cursor"}``). */
export async function listAll(path) {
  const items = [];
  let cursor = null;
  for (let page = 0; page < 50; page++) {
    const sep = path.includes("?") ? "&" : "?";
    const data = await api("GET", cursor ? `${path}${sep}cursor=${encodeURIComponent(cursor)}` : path);
    items.push(...data.items);
    cursor = data.next_cursor;
    if (!cursor) break;
  }
  return items;
}
