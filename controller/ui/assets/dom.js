// Small DOM helpers: elements are always built with createElement and text nodes, never
// from HTML strings, so nothing the API returns can become markup.

const SVG_NS = "http://www.w3.org/2000/svg";

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

function setAttrs(el, attrs) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2).toLowerCase(), value);
    } else if (key === "dataset") {
      Object.assign(el.dataset, value);
    } else if (value === true) {
      el.setAttribute(key, "");
    } else {
      el.setAttribute(key, String(value));
    }
  }
}

/** An HTML element: h("a", {href: "#/runs"}, "Runs"). */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

/** An SVG element. */
export function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

/** Replaces the children of `el`. */
export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** A date as local date and time, or a dash. */
export function when(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  return d.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

/** A <time> element with the local time and the exact value as its datetime. */
export function time(iso) {
  if (!iso) return "—";
  return h("time", { datetime: iso, title: iso }, ago(iso));
}

/** "3 min ago", "in 2 h", for recent times; a date otherwise. */
export function ago(iso) {
  const t = new Date(iso).getTime();
  if (Number.isNaN(t)) return String(iso);
  const secs = Math.round((Date.now() - t) / 1000);
  const abs = Math.abs(secs);
  const unit =
    abs < 60 ? [abs, "s"] : abs < 3600 ? [Math.round(abs / 60), "min"] : abs < 86400 ? [Math.round(abs / 3600), "h"] : null;
  if (!unit) return when(iso);
  return secs >= 0 ? `${unit[0]} ${unit[1]} ago` : `in ${unit[0]} ${unit[1]}`;
}

/** The first 8 characters of a commit or hash. */
export function short(sha) {
  return sha ? String(sha).slice(0, 8) : "—";
}

/** Words from a snake_case state: "awaiting_approval" -> "awaiting approval". */
export function words(state) {
  return String(state ?? "unknown").replaceAll("_", " ");
}

/** A coloured status badge; the colour follows `data-state`, the text says it too. */
export function badge(state, extra) {
  return h("span", { class: "badge", "data-state": String(state ?? "unknown"), ...extra }, words(state));
}

/** A value from the API as readable text: strings as they are, others as JSON. */
export function show(value) {
  if (value === null || value === undefined) return "∅";
  if (typeof value === "string") return value;
  return JSON.stringify(value);
}

/** A number with at most 3 decimals. */
export function num(value) {
  if (typeof value !== "number" || !Number.isFinite(value)) return show(value);
  return Number.isInteger(value) ? String(value) : value.toFixed(3).replace(/0+$/, "").replace(/\.$/, "");
}

/** A table inside a scrolling wrapper, with a caption for screen readers. */
export function table(caption, headers, rows, attrs) {
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      attrs,
      h("caption", { class: "visually-hidden" }, caption),
      h("thead", null, h("tr", null, headers.map((x) => h("th", { scope: "col" }, x)))),
      h("tbody", null, rows),
    ),
  );
}

/** A message box; `role=alert` for errors so screen readers announce them. */
export function notice(kind, ...children) {
  return h("p", { class: `notice ${kind}`, role: kind === "error" ? "alert" : "status" }, ...children);
}

/** The error box for a failed API call. */
export function errorBox(what, err) {
  return notice("error", `${what}: `, err && err.message ? err.message : String(err));
}
