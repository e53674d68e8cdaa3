// The console is a client of the public API only: same-origin fetches with the session cookie.

export class ApiError extends Error {
  constructor(status, body) {
    super(body?.detail || `request failed (${status})`);
    this.status = status;
    this.body = body || {};
  }
}

async function request(method, path, body, extra = {}) {
  const headers = { Accept: "application/json", ...(extra.headers || {}) };
  const init = { method, headers, credentials: "same-origin", signal: extra.signal };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  if (response.status === 401 && !extra.allow401) {
    window.dispatchEvent(new CustomEvent("signed-out"));
  }
  if (!response.ok) {
    let detail = null;
    try { detail = await response.json(); } catch { /* not JSON */ }
    throw new ApiError(response.status, detail);
  }
  if (response.status === 204) return null;
  const type = response.headers.get("content-type") || "";
  return type.includes("json") ? response.json() : response.text();
}

export const api = {
  get: (path, extra) => request("GET", path, undefined, extra),
  post: (path, body, extra) => request("POST", path, body ?? {}, extra),
  put: (path, body, extra) => request("PUT", path, body, extra),
  del: (path, extra) => request("DELETE", path, undefined, extra),
};

/** Query string from an object, skipping empty values. */
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== "") q.set(k, v);
  const s = q.toString();
  return s ? `?${s}` : "";
}

/**
 * Server-Sent Events from a fetch response (POST streams cannot use EventSource): calls
 * onEvent({id, event, data}) per event; resolves when the stream ends.
 */
export async function readEvents(response, onEvent) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let event = { id: null, event: "message", data: [] };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let nl;
    while ((nl = buffer.search(/\r\n|\r|\n/)) >= 0) {
      const line = buffer.slice(0, nl);
      buffer = buffer.slice(nl + (buffer.startsWith("\r\n", nl) ? 2 : 1));
      if (line === "") {
        if (event.data.length) {
          let data = event.data.join("\n");
          try { data = JSON.parse(data); } catch { /* plain text */ }
          onEvent({ id: event.id, event: event.event, data });
        }
        event = { id: null, event: "message", data: [] };
      } else if (!line.startsWith(":")) {
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const val = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "data") event.data.push(val);
        else if (field === "event") event.event = val;
        else if (field === "id") event.id = val;
      }
    }
  }
}

/** A random id for Idempotency-Key. */
export function randomKey() {
  return crypto.randomUUID();
}
