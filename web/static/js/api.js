// The REST API as the web session uses it: the HttpOnly session cookie authenticates, and every
// request that changes something echoes the CSRF token (double-submit, `zhiku_csrf` cookie).

export const V1 = "/api/v1";
const CSRF_COOKIE = "zhiku_csrf";

export class ApiError extends Error {
  constructor(status, code, message, retryAfter) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

function csrfToken() {
  for (const part of document.cookie.split(";")) {
    const [name, ...rest] = part.trim().split("=");
    if (name === CSRF_COOKIE) return decodeURIComponent(rest.join("="));
  }
  return "";
}

function headers(extra = {}) {
  const out = { Accept: "application/json", ...extra };
  const token = csrfToken();
  if (token) out["X-CSRF-Token"] = token;
  return out;
}

async function errorFrom(response) {
  let code = `http_${response.status}`;
  let message = response.statusText || "request failed";
  try {
    const body = await response.json();
    if (body && body.error) {
      code = body.error.code || code;
      message = body.error.message || message;
    }
  } catch {
    /* not JSON: keep the status line */
  }
  const error = new ApiError(response.status, code, message, response.headers.get("Retry-After"));
  if (response.status === 401) window.dispatchEvent(new CustomEvent("zhiku:signed-out", { detail: error }));
  if (response.status === 403 && code === "password_change_required") {
    window.dispatchEvent(new CustomEvent("zhiku:password-change"));
  }
  return error;
}

/** JSON request to /api/v1`path`; resolves to the parsed body (null for 204). */
export async function api(method, path, body, { signal, query } = {}) {
  let url = V1 + path;
  if (query) {
    const params = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) {
      if (v === null || v === undefined || v === "") continue;
      for (const item of Array.isArray(v) ? v : [v]) params.append(k, String(item));
    }
    const qs = params.toString();
    if (qs) url += `?${qs}`;
  }
  let response;
  try {
    response = await fetch(url, {
      method,
      credentials: "same-origin",
      headers: headers(body === undefined ? {} : { "Content-Type": "application/json" }),
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
    });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, "network", "the server cannot be reached; check your connection and try again");
  }
  if (!response.ok) throw await errorFrom(response);
  if (response.status === 204) return null;
  return response.json();
}

export const get = (path, query, opts = {}) => api("GET", path, undefined, { ...opts, query });
export const post = (path, body, opts) => api("POST", path, body ?? {}, opts);
export const patch = (path, body, opts) => api("PATCH", path, body, opts);
export const put = (path, body, opts) => api("PUT", path, body, opts);
export const del = (path, opts) => api("DELETE", path, undefined, opts);

/**
 * Multipart upload with progress (fetch cannot report upload progress; XMLHttpRequest can).
 * `onProgress(fraction)`; resolves to the JSON answer.
 */
export function upload(path, formData, onProgress, signal) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", V1 + path);
    xhr.withCredentials = true;
    for (const [k, v] of Object.entries(headers())) xhr.setRequestHeader(k, v);
    xhr.upload.addEventListener("progress", (e) => {
      if (e.lengthComputable && onProgress) onProgress(e.loaded / e.total);
    });
    xhr.addEventListener("load", () => {
      let body = null;
      try {
        body = JSON.parse(xhr.responseText);
      } catch {
        /* not JSON */
      }
      if (xhr.status >= 200 && xhr.status < 300) resolve(body);
      else {
        const err = body && body.error ? body.error : {};
        reject(new ApiError(xhr.status, err.code || `http_${xhr.status}`, err.message || xhr.statusText));
      }
    });
    xhr.addEventListener("error", () => reject(new ApiError(0, "network", "the upload was interrupted; try again")));
    xhr.addEventListener("abort", () => reject(new DOMException("aborted", "AbortError")));
    if (signal) signal.addEventListener("abort", () => xhr.abort());
    xhr.send(formData);
  });
}

/**
 * POST a JSON body and read the answer as server-sent events. Calls `onEvent(name, data)` for
 * each; resolves when the stream ends. Abort with `signal` (stops generation server-side too:
 * the server cancels the answer when the connection closes).
 */
export async function streamEvents(path, body, onEvent, signal) {
  let response;
  try {
    response = await fetch(V1 + path, {
      method: "POST",
      credentials: "same-origin",
      headers: headers({ "Content-Type": "application/json", Accept: "text/event-stream" }),
      body: JSON.stringify(body),
      signal,
    });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, "network", "the server cannot be reached; check your connection and try again");
  }
  if (!response.ok) throw await errorFrom(response);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      let name = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) name = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (data.length) onEvent(name, JSON.parse(data.join("\n")));
    }
  }
}
