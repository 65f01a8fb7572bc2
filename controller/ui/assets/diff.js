// A run's plan as a readable diff: one block per action (marker, key, verb, status,
// attempts, last error) with a table of its field changes, the observed value struck
// through and the declared one inserted, and a marker on changes that need a restart.

import { badge, h, num, show, words } from "./dom.js";

const MARKERS = { create: "+", upsert: "+", delete: "-", remove: "-" };
const IMPACT_TEXT = {
  live: "applied live",
  restart: "restart required",
  recreate: "recreates the resource",
  destroys_data: "destroys data",
};

function marker(verb) {
  return MARKERS[verb] || "~";
}

function value(v, tag) {
  if (v === null || v === undefined) return h("span", { class: "muted" }, "(none)");
  return h(tag, null, typeof v === "number" ? num(v) : show(v));
}

/** The field changes of an action: `diff` from the store, or `changes` from a plan. */
export function changesOf(action) {
  const raw = action.diff ?? action.changes ?? [];
  if (Array.isArray(raw)) return raw;
  // a map field -> {observed, desired}
  return Object.entries(raw).map(([field, c]) => ({ field, ...(c || {}) }));
}

function changeRow(c) {
  const impact = c.impact || "live";
  return h(
    "tr",
    { "data-impact": impact },
    h("td", null, c.field),
    h("td", null, value(c.observed, "del")),
    h("td", null, value(c.desired, "ins")),
    h(
      "td",
      null,
      impact === "live"
        ? h("span", { class: "muted" }, IMPACT_TEXT.live)
        : h("span", { class: "badge restart", "data-state": impact }, IMPACT_TEXT[impact] || words(impact)),
    ),
  );
}

/** One action of a run, with its diff. */
export function actionBlock(action) {
  const verb = action.verb || "";
  const resource =
    action.kind && action.resource
      ? `${action.kind}/${action.resource}`
      : action.resource && action.resource.kind
        ? `${action.resource.kind}/${action.resource.name}`
        : action.key;
  const changes = changesOf(action);
  const restart = changes.some((c) => c.impact && c.impact !== "live");
  const id = `action-${action.id ?? action.key}`;
  return h(
    "section",
    { class: "card action", "aria-labelledby": id, "data-key": action.key || "" },
    h(
      "div",
      { class: "action-head" },
      h("span", { class: "marker", "data-verb": marker(verb), "aria-hidden": "true" }, marker(verb)),
      h("h3", { id, class: "key" }, `${verb} ${resource}`),
      action.status ? badge(action.status, { class: "badge action-status" }) : null,
      restart ? h("span", { class: "badge", "data-state": "restart_required" }, "restart required") : null,
      action.attempts ? h("span", { class: "muted" }, `${action.attempts} attempt${action.attempts === 1 ? "" : "s"}`) : null,
      action.required_approvals ? h("span", { class: "muted" }, `needs ${action.required_approvals} approval${action.required_approvals === 1 ? "" : "s"}`) : null,
    ),
    action.last_error ? h("p", { class: "error-text", role: "note" }, `Error: ${action.last_error}`) : null,
    action.external_ref ? h("p", { class: "muted mono" }, action.external_ref) : null,
    changes.length
      ? h(
          "div",
          { class: "table-wrap" },
          h(
            "table",
            { class: "diff" },
            h("caption", { class: "visually-hidden" }, `Changes of ${verb} ${resource}`),
            h(
              "thead",
              null,
              h("tr", null, ["Field", "Now", "Declared", "Effect"].map((x) => h("th", { scope: "col" }, x))),
            ),
            h("tbody", null, changes.map(changeRow)),
          ),
        )
      : h("p", { class: "muted" }, "No field changes."),
  );
}
