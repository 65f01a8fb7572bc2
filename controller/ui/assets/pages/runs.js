// Runs: the list with filters (status, trigger, commit) and cursor paging, and one run's
// page: its plan as a diff, its actions with status and errors, its approvals, and the
// Approve and Reject buttons for operators, which send the plan hash shown on the page.

import { can, get, list, post } from "../api.js";
import { actionBlock } from "../diff.js";
import { badge, errorBox, h, notice, short, table, time, words } from "../dom.js";

export const title = "Runs";

const STATUSES = [
  "observing",
  "no_changes",
  "awaiting_approval",
  "approved",
  "applying",
  "succeeded",
  "failed",
  "partially_failed",
  "rejected",
  "expired",
  "superseded",
  "invalid",
];
const TRIGGERS = ["poll", "webhook", "manual", "drift", "cli"];

/** Redraw on run, action and approval events (the list on any of them, a run on its own). */
export function follows(event, params) {
  if (!["run", "action", "approval"].includes(event.type)) return false;
  if (params.rest.length) return String(event.run_id) === params.rest[0];
  return true;
}

export async function render(main, params) {
  if (params.rest.length) return renderRun(main, params.rest[0]);
  return renderList(main, params.query);
}

function select(id, label, values, chosen) {
  return h(
    "div",
    null,
    h("label", { for: id }, label),
    h(
      "select",
      { id, name: id },
      h("option", { value: "" }, "any"),
      values.map((v) => h("option", { value: v, selected: v === chosen }, words(v))),
    ),
  );
}

async function renderList(main, query) {
  const filters = {
    status: query.get("status") || "",
    trigger: query.get("trigger") || "",
    commit: query.get("commit") || "",
  };
  const form = h(
    "form",
    { class: "filters", role: "search", "aria-label": "Filter runs" },
    select("status", "Status", STATUSES, filters.status),
    select("trigger", "Trigger", TRIGGERS, filters.trigger),
    h(
      "div",
      null,
      h("label", { for: "commit" }, "Commit"),
      h("input", { id: "commit", name: "commit", value: filters.commit, placeholder: "sha prefix", autocomplete: "off", spellcheck: "false" }),
    ),
    h("button", { type: "submit" }, "Filter"),
  );
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const q = new URLSearchParams();
    for (const key of ["status", "trigger", "commit"]) {
      const v = form.elements[key].value.trim();
      if (v) q.set(key, v);
    }
    location.hash = `#/runs${q.toString() ? `?${q}` : ""}`;
  });
  main.append(h("h1", null, "Runs"), form);

  let page;
  try {
    page = await get("/runs", { ...filters, before: query.get("before"), limit: 50 });
  } catch (err) {
    main.append(errorBox("Could not load runs", err));
    return;
  }
  const runs = list(page, "runs");
  if (!runs.length) {
    main.append(notice("info", "No runs match."));
    return;
  }
  main.append(
    table(
      "Runs, newest first",
      ["Run", "Status", "Trigger", "Commit", "Requested by", "Created", "Finished"],
      runs.map((r) =>
        h(
          "tr",
          { "data-run": r.id },
          h("td", null, h("a", { href: `#/runs/${r.id}` }, `Run ${r.id}`)),
          h("td", null, badge(r.status)),
          h("td", null, words(r.trigger)),
          h("td", null, h("code", { title: r.commit_sha }, short(r.commit_sha))),
          h("td", null, r.requested_by || "—"),
          h("td", null, time(r.created_at)),
          h("td", null, time(r.finished_at)),
        ),
      ),
      { id: "runs-table" },
    ),
  );
  const next = page && page.next_cursor;
  if (next) {
    const q = new URLSearchParams(query);
    q.set("before", next);
    main.append(h("p", null, h("a", { href: `#/runs?${q}` }, "Older runs")));
  }
}

function decisionForm(run) {
  const result = h("div", { role: "status", "aria-live": "polite" });
  const comment = h("textarea", { id: "decision-comment", name: "comment", rows: 2, maxlength: 2000 });
  const form = h(
    "form",
    { class: "card", id: "decision", "aria-labelledby": "decision-title" },
    h("h2", { id: "decision-title" }, "Your decision"),
    h(
      "p",
      null,
      "You decide on plan ",
      h("code", { id: "decision-hash", title: run.plan_hash }, short(run.plan_hash)),
      ". If the plan changes before you press a button, the server refuses the decision.",
    ),
    h("label", { for: "decision-comment" }, "Comment (optional)"),
    comment,
    h(
      "div",
      { class: "actions-row" },
      h("button", { type: "submit", class: "primary", id: "approve", value: "approve" }, "Approve"),
      h("button", { type: "submit", class: "danger", id: "reject", value: "reject" }, "Reject"),
    ),
    result,
  );
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const decision = e.submitter && e.submitter.value === "reject" ? "reject" : "approve";
    for (const b of form.querySelectorAll("button")) b.disabled = true;
    try {
      await post(`/runs/${run.id}/${decision}`, { plan_hash: run.plan_hash, comment: comment.value.trim() || null });
      result.replaceChildren(notice("ok", decision === "approve" ? "Approved." : "Rejected."));
    } catch (err) {
      const why =
        err.status === 409
          ? "The plan changed or the run moved on since this page was drawn; reload it and look again."
          : err.message;
      result.replaceChildren(notice("error", `Could not ${decision}: ${why}`));
      for (const b of form.querySelectorAll("button")) b.disabled = false;
    }
  });
  return form;
}

async function renderRun(main, id) {
  let detail;
  try {
    detail = await get(`/runs/${encodeURIComponent(id)}`);
  } catch (err) {
    main.append(h("h1", null, `Run ${id}`), errorBox("Could not load the run", err));
    return;
  }
  // `GET /runs/{id}` answers {run, actions, approvals, window}.
  const { run, actions, approvals } = detail;

  main.append(
    h("p", null, h("a", { href: "#/runs" }, "← All runs")),
    h("h1", null, `Run ${run.id} `, badge(run.status, { id: "run-status", "data-status": run.status })),
  );
  const facts = [
    ["Commit", h("code", { title: run.commit_sha }, run.commit_sha || "—")],
    ["Trigger", words(run.trigger)],
    ["Requested by", run.requested_by || "—"],
    ["Plan hash", run.plan_hash ? h("code", { title: run.plan_hash }, short(run.plan_hash)) : "—"],
    ["Approvals", `${approvals.filter((a) => a.decision === "approve" && a.plan_hash === run.plan_hash).length} of ${run.required_approvals}`],
    ["Created", time(run.created_at)],
    ["Expires", run.status === "awaiting_approval" ? time(run.expires_at) : null],
    ["Finished", time(run.finished_at)],
    ["Superseded by", run.superseded_by ? h("a", { href: `#/runs/${run.superseded_by}` }, `Run ${run.superseded_by}`) : null],
  ].filter(([, v]) => v !== null);
  const authors = (run.plan && run.plan.commits) || [];
  if (authors.length) {
    facts.push(["Commits", authors.map((c) => `${short(c.sha)} ${c.author_email || ""}`).join(", ")]);
  }
  main.append(
    h(
      "section",
      { class: "card", "aria-label": "Run facts" },
      h("dl", { class: "facts" }, facts.map(([k, v]) => [h("dt", null, k), h("dd", null, v)])),
      run.error ? h("p", { class: "error-text", role: "note" }, `Error: ${run.error}`) : null,
    ),
  );

  const deciding = run.status === "awaiting_approval" && can("operator");
  if (deciding) main.append(notice("warn", "This run waits for your decision: read the plan below, then approve or reject it."));
  else if (run.status === "awaiting_approval") main.append(notice("info", "This run waits for an operator's approval."));
  if (detail.window && detail.window.message) {
    main.append(notice("info", `This run is ${detail.window.message}.`));
  }

  main.append(h("h2", { id: "plan-title" }, `Plan (${actions.length} action${actions.length === 1 ? "" : "s"})`));
  if (run.status === "invalid" && !actions.length) {
    main.append(h("pre", null, JSON.stringify(run.plan, null, 2)));
  } else if (run.status === "observing") {
    main.append(h("p", { class: "muted" }, "Observing the world; the plan follows."));
  } else if (!actions.length) {
    main.append(h("p", { class: "muted" }, "Nothing to do."));
  } else {
    main.append(h("div", { id: "plan", "aria-labelledby": "plan-title" }, actions.map(actionBlock)));
  }

  if (deciding) main.append(decisionForm(run));

  main.append(h("h2", null, "Approvals"));
  if (!approvals.length) {
    main.append(h("p", { class: "muted" }, "No decisions yet."));
  } else {
    main.append(
      table(
        "Approvals and rejections",
        ["Who", "Decision", "Plan", "Comment", "When"],
        approvals.map((a) =>
          h(
            "tr",
            null,
            h("td", null, a.user_name),
            h("td", null, badge(a.decision)),
            h("td", null, h("code", { title: a.plan_hash }, short(a.plan_hash)), a.plan_hash !== run.plan_hash ? " (older plan)" : ""),
            h("td", null, a.comment || "—"),
            h("td", null, time(a.created_at)),
          ),
        ),
      ),
    );
  }
}
