// Overview: the controller's status, the commit in force, resources by sync state, runs
// waiting for approval and open alerts. Each box loads on its own, so one failing endpoint
// leaves the others readable.

import { get, list } from "../api.js";
import { badge, errorBox, h, short, table, time } from "../dom.js";

export const title = "Overview";

export function follows() {
  return true;
}

async function section(heading, id, load, wide) {
  let body;
  try {
    body = await load();
  } catch (err) {
    body = errorBox(`Could not load ${heading.toLowerCase()}`, err);
  }
  return h("section", { class: wide ? "card wide" : "card", "aria-labelledby": id }, h("h2", { id }, heading), body);
}

function controller(status) {
  const facts = [
    ["Scope", status.scope || "—"],
    ["Commit", status.commit ? h("code", { title: status.commit }, short(status.commit)) : "—"],
    ["Last fetch", time(status.last_fetch_at)],
    ["Last reconcile", time(status.last_reconcile_at)],
    ["Outcome", status.last_outcome || "—"],
    ["Leader", status.leader ? "yes" : "no"],
    ["Started", time(status.started_at)],
  ];
  return [
    status.last_fetch_error ? h("p", { class: "notice error", role: "alert" }, `Fetch failed: ${status.last_fetch_error}`) : null,
    status.last_reconcile_failed ? h("p", { class: "notice warn" }, "The last reconcile failed; it is retried with backoff.") : null,
    ...(status.unobserved || []).map((u) =>
      h("p", { class: "notice error", role: "alert" }, `Observation failed: ${u.resource}: ${u.reason}. Nothing is planned for it until it can be observed.`)),
    h("dl", { class: "facts" }, facts.map(([k, v]) => [h("dt", null, k), h("dd", null, v)])),
  ];
}

/** Resources by sync state, from the status's `{state: count}`. */
function syncCounts(resources) {
  const counts = new Map();
  for (const [state, n] of Object.entries(resources)) if (n) counts.set(state, n);
  if (!counts.size) return h("p", { class: "muted" }, "Nothing declared yet.");
  return h(
    "ul",
    { class: "counts" },
    [...counts.entries()]
      .sort()
      .map(([state, n]) =>
        h("li", null, h("a", { href: `#/resources?sync=${encodeURIComponent(state)}` }, badge(state), " ", String(n))),
      ),
  );
}

export async function render(main) {
  const statusP = get("/status").catch((err) => ({ error: err }));
  const boxes = await Promise.all([
    section("Controller", "ov-controller", async () => {
      const status = await statusP;
      if (status.error) throw status.error;
      return controller(status);
    }),
    section("Resources", "ov-resources", async () => {
      const status = await statusP;
      if (status.error) throw status.error;
      return syncCounts(status.resources);
    }),
    section("Waiting for approval", "ov-waiting", async () => {
      const runs = list(await get("/runs", { status: "awaiting_approval", limit: 20 }), "runs");
      if (!runs.length) return h("p", { class: "muted" }, "No run is waiting.");
      return h(
        "ul",
        null,
        runs.map((r) =>
          h("li", null, h("a", { href: `#/runs/${r.id}` }, `Run ${r.id}`), " for ", h("code", null, short(r.commit_sha)), " · ", time(r.created_at)),
        ),
      );
    }),
    section("Open alerts", "ov-alerts", async () => {
      const alerts = list(await get("/alerts")).filter((a) => a.state !== "resolved");
      if (!alerts.length) return h("p", { class: "muted" }, "No open alerts.");
      return table(
        "Open alerts",
        ["Alert", "Device", "State", "Severity", "Since"],
        alerts.map((a) =>
          h(
            "tr",
            null,
            h("td", null, a.rule),
            h("td", null, a.device),
            h("td", null, badge(a.state)),
            h("td", null, badge(a.severity)),
            h("td", null, time(a.firing_at || a.opened_at)),
          ),
        ),
      );
    }, true),
  ]);
  main.append(h("h1", null, "Overview"), h("div", { class: "grid" }, boxes));
}
