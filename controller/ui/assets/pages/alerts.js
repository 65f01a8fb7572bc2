// Alerts: open and past alerts, filtered by state, with Acknowledge for operators.

import { can, get, list, post } from "../api.js";
import { badge, errorBox, h, notice, num, table, time, words } from "../dom.js";

export const title = "Alerts";

const STATES = ["pending", "firing", "resolved"];

export function follows(event) {
  return event.type === "alert";
}

export async function render(main, params) {
  const state = params.query.get("state") || "";
  const form = h(
    "form",
    { class: "filters", role: "search", "aria-label": "Filter alerts" },
    h(
      "div",
      null,
      h("label", { for: "state" }, "State"),
      h("select", { id: "state", name: "state" }, h("option", { value: "" }, "any"), STATES.map((st) => h("option", { value: st, selected: st === state }, words(st)))),
    ),
    h("button", { type: "submit" }, "Filter"),
  );
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const v = form.elements.state.value;
    location.hash = v ? `#/alerts?state=${v}` : "#/alerts";
  });
  main.append(h("h1", null, "Alerts"), form);
  let alerts;
  try {
    alerts = list(await get("/alerts", { state }));
  } catch (err) {
    main.append(errorBox("Could not load alerts", err));
    return;
  }
  if (!alerts.length) {
    main.append(notice("info", "No alerts."));
    return;
  }
  const status = h("div", { role: "status", "aria-live": "polite" });
  const ack = async (a, button) => {
    button.disabled = true;
    try {
      await post(`/alerts/${a.id}/ack`, {});
      status.replaceChildren(notice("ok", `Acknowledged ${a.rule} on ${a.device}.`));
    } catch (err) {
      button.disabled = false;
      status.replaceChildren(errorBox("Could not acknowledge", err));
    }
  };
  main.append(
    status,
    table(
      "Alerts",
      ["Alert", "Device", "State", "Severity", "Value", "Opened", "Acknowledged", ""],
      alerts.map((a) => {
        let cell = "—";
        if (a.acknowledged_by) cell = [a.acknowledged_by, " ", time(a.acknowledged_at)];
        const button =
          !a.acknowledged_by && a.state !== "resolved" && can("operator")
            ? h("button", { type: "button", "aria-label": `Acknowledge ${a.rule} on ${a.device}` }, "Acknowledge")
            : null;
        if (button) button.addEventListener("click", () => ack(a, button));
        return h(
          "tr",
          { "data-alert": a.id },
          h("td", null, a.rule),
          h("td", null, a.device),
          h("td", null, badge(a.state)),
          h("td", null, badge(a.severity)),
          h("td", { class: "num" }, a.value === null || a.value === undefined ? "—" : num(a.value)),
          h("td", null, time(a.opened_at)),
          h("td", null, cell),
          h("td", null, button),
        );
      }),
    ),
  );
}
