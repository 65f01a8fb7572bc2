// The page's only way to the server: JSON calls to /api/v1 with the access token (kept in
// memory, never in storage), silent renewal through the HttpOnly refresh cookie plus the
// CSRF header, and the live event stream read with fetch() (EventSource cannot send the
// Authorization header).

const BASE = "/api/v1";

/** An error answered by the API: `{"error": {"code", "message", "details"}}`. */
export class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message || `HTTP ${status}`);
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

const session = { token: null, user: null };
const listeners = new Set();

/** Calls `fn(user)` whenever the signed-in user changes (null when signed out). */
export function onSession(fn) {
  listeners.add(fn);
}

function setSession(token, user) {
  session.token = token;
  session.user = user;
  for (const fn of listeners) fn(user);
}

/** The signed-in user `{name, role}`, or null. */
export function currentUser() {
  return session.user;
}

const RANK = { viewer: 1, operator: 2, admin: 3 };

/** Whether the signed-in user's role includes `role`. */
export function can(role) {
  const mine = session.user && RANK[session.user.role];
  return Boolean(mine && mine >= RANK[role]);
}

function cookie(name) {
  for (const part of document.cookie.split(";")) {
    const [k, ...v] = part.trim().split("=");
    if (k === name) return decodeURIComponent(v.join("="));
  }
  return null;
}

async function parseError(res) {
  let code = "http_error";
  let message = `${res.status} ${res.statusText}`;
  let details;
  try {
    const body = await res.json();
    if (body && body.error) {
      code = body.error.code || code;
      message = body.error.message || message;
      details = body.error.details;
    }
  } catch {
    // not JSON: keep the status line
  }
  return new ApiError(res.status, code, message, details);
}

/** An answer that is not of the shape the API documents: a bug to show, never to paper over. */
function badAnswer(what) {
  return new ApiError(0, "bad_response", `the server's answer has no ${what}`);
}

/** The page's user `{name, role}` from a token answer's `user` (login and refresh). */
function userOf(user) {
  if (!user || typeof user.name !== "string" || typeof user.role !== "string") {
    throw badAnswer("user with a name and a role");
  }
  return { name: user.name, role: user.role };
}

let refreshing = null;

/** Renews the access token with the refresh cookie; resolves to true when it worked. */
export function refresh() {
  if (!refreshing) {
    refreshing = (async () => {
      const csrf = cookie("mycopod_csrf");
      if (!csrf) return false;
      const res = await fetch(`${BASE}/auth/refresh`, {
        method: "POST",
        credentials: "same-origin",
        headers: { "X-CSRF-Token": csrf, Accept: "application/json" },
      });
      if (!res.ok) return false;
      const body = await res.json();
      if (!body.access_token) return false;
      if (session.user) session.token = body.access_token;
      else setSession(body.access_token, userOf(body.user));
      return true;
    })()
      .catch(() => false)
      .finally(() => {
        refreshing = null;
      });
  }
  return refreshing;
}

/** Signs in; resolves to the user or throws an ApiError. */
export async function login(username, password) {
  const res = await fetch(`${BASE}/auth/login`, {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", Accept: "application/json" },
    body: JSON.stringify({ username, password }),
  });
  if (!res.ok) throw await parseError(res);
  const body = await res.json();
  const user = userOf(body.user);
  setSession(body.access_token, user);
  return user;
}

/** Signs out here and on the server (the refresh token family is revoked there). */
export async function logout() {
  try {
    const csrf = cookie("mycopod_csrf");
    await fetch(`${BASE}/auth/logout`, {
      method: "POST",
      credentials: "same-origin",
      headers: {
        ...(session.token ? { Authorization: `Bearer ${session.token}` } : {}),
        ...(csrf ? { "X-CSRF-Token": csrf } : {}),
      },
    });
  } finally {
    setSession(null, null);
  }
}

/** One API call; renews the token once on a 401. Resolves to the JSON body (or null). */
export async function call(method, path, body, options = {}) {
  const headers = { Accept: "application/json" };
  if (session.token) headers.Authorization = `Bearer ${session.token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(`${BASE}${path}`, {
    method,
    headers,
    credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (res.status === 401 && options.retry !== false) {
    if (await refresh()) return call(method, path, body, { ...options, retry: false });
    setSession(null, null);
  }
  if (!res.ok) throw await parseError(res);
  if (res.status === 204) return null;
  const text = await res.text();
  return text ? JSON.parse(text) : null;
}

/** GET with query parameters (empty ones left out). */
export function get(path, params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) {
    if (v !== undefined && v !== null && v !== "") q.set(k, String(v));
  }
  const qs = q.toString();
  return call("GET", qs ? `${path}?${qs}` : path);
}

/** POST a JSON body. */
export function post(path, body) {
  return call("POST", path, body ?? {});
}

/**
 * The list an answer is (no `key`) or holds under `key`, as the API documents it; any other
 * shape is an ApiError, so that a changed answer shows as an error, not as an empty page.
 */
export function list(body, key) {
  const found = key === undefined ? body : body && body[key];
  if (!Array.isArray(found)) throw badAnswer(key === undefined ? "list" : `"${key}" list`);
  return found;
}

/**
 * Follows `GET /api/v1/events` until `stop()` is called: `onEvent({type, ...})` for each
 * event and `onState("live" | "connecting" | "offline")` for the connection. Reconnects with
 * backoff; renews the token when the stream answers 401.
 */
export function followEvents(onEvent, onState) {
  let stopped = false;
  let controller = null;
  let delay = 1000;

  async function once() {
    controller = new AbortController();
    onState("connecting");
    const res = await fetch(`${BASE}/events`, {
      headers: { Accept: "text/event-stream", Authorization: `Bearer ${session.token}` },
      credentials: "same-origin",
      signal: controller.signal,
    });
    if (res.status === 401) {
      if (!(await refresh())) {
        setSession(null, null);
        stopped = true;
      }
      return;
    }
    if (!res.ok || !res.body) throw new Error(`events: HTTP ${res.status}`);
    onState("live");
    delay = 1000;
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    let name = "message";
    let data = [];
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      let nl;
      while ((nl = buffer.search(/\r?\n/)) >= 0) {
        const line = buffer.slice(0, nl);
        buffer = buffer.slice(nl + (buffer[nl] === "\r" ? 2 : 1));
        if (line === "") {
          if (data.length) dispatch(name, data.join("\n"));
          name = "message";
          data = [];
        } else if (line.startsWith(":")) {
          // a keep-alive comment
        } else {
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          let val = colon < 0 ? "" : line.slice(colon + 1);
          if (val.startsWith(" ")) val = val.slice(1);
          if (field === "event") name = val;
          else if (field === "data") data.push(val);
        }
      }
    }
  }

  function dispatch(name, text) {
    let event;
    try {
      event = JSON.parse(text);
    } catch {
      event = { data: text };
    }
    if (!event || typeof event !== "object") event = { data: event };
    if (!event.type) event.type = name;
    onEvent(event);
  }

  (async () => {
    while (!stopped && session.token) {
      try {
        await once();
      } catch (err) {
        if (stopped) break;
      }
      if (stopped || !session.token) break;
      onState("offline");
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 30000);
    }
  })();

  return () => {
    stopped = true;
    if (controller) controller.abort();
  };
}
