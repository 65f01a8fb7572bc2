// Devices: each Modbus device's online state, last contact and latest values, a chart of
// each register over the last hour or day (from /readings/summary), and its open alerts.

import { get, list } from "../api.js";
import { lineChart } from "../chart.js";
import { badge, errorBox, h, notice, num, table, time } from "../dom.js";

export const title = "Devices";

/** Readings arrive without events: redraw every 15 s while the page is open. */
export const refreshEvery = 15000;

const RANGES = {
  hour: { ms: 3600 * 1000, bucket: "1m", label: "Last hour" },
  day: { ms: 24 * 3600 * 1000, bucket: "15m", label: "Last day" },
};

export function follows(event) {
  return event.type === "alert";
}

async function chartFor(device, register, range, now) {
  const from = new Date(now.getTime() - range.ms);
  try {
    const body = await get("/readings/summary", {
      device,
      register,
      from: from.toISOString(),
      to: now.toISOString(),
      bucket: range.bucket,
    });
    return lineChart(list(body, "buckets"), from, now, `${device} ${register}`);
  } catch (err) {
    return errorBox(`Could not load ${register}`, err);
  }
}

export async function render(main, params) {
  const rangeName = params.query.get("range") === "day" ? "day" : "hour";
  const range = RANGES[rangeName];
  main.append(
    h("h1", null, "Devices"),
    h(
      "div",
      { class: "segmented", role: "group", "aria-label": "Chart period" },
      Object.entries(RANGES).map(([key, r]) =>
        h(
          "button",
          {
            type: "button",
            "aria-pressed": key === rangeName ? "true" : "false",
            onclick: () => {
              location.hash = `#/devices?range=${key}`;
            },
          },
          r.label,
        ),
      ),
    ),
  );
  let devices;
  let alerts = [];
  try {
    devices = list(await get("/devices"));
  } catch (err) {
    main.append(errorBox("Could not load devices", err));
    return;
  }
  try {
    alerts = list(await get("/alerts")).filter((a) => a.state !== "resolved");
  } catch {
    // the alerts box below says nothing rather than failing the page
  }
  if (!devices.length) {
    main.append(notice("info", "No devices yet."));
    return;
  }
  const now = new Date();
  const sections = await Promise.all(
    devices.map(async (d) => {
      // `GET /devices` gives each device's latest values as [{register, value, time}].
      const latest = d.latest;
      const id = `device-${d.name}`;
      const charts = await Promise.all(
        latest.map(async (r) =>
          h("figure", { class: "card", "data-register": r.register }, h("figcaption", null, h("h3", null, r.register)), await chartFor(d.name, r.register, range, now)),
        ),
      );
      const open = alerts.filter((a) => a.device === d.name);
      return h(
        "section",
        { class: "device", "aria-labelledby": id, "data-device": d.name },
        h(
          "div",
          { class: "device-head" },
          h("h2", { id }, d.name),
          badge(d.online ? "online" : "offline"),
          h("span", { class: "muted" }, "last seen ", time(d.last_seen)),
        ),
        d.last_error && !d.online ? h("p", { class: "error-text" }, `Last error: ${d.last_error}`) : null,
        latest.length
          ? table(
              `Latest values of ${d.name}`,
              ["Register", "Value", "Read"],
              latest.map((r) => h("tr", null, h("td", null, r.register), h("td", { class: "num" }, num(r.value)), h("td", null, time(r.time)))),
            )
          : h("p", { class: "muted" }, "No readings yet."),
        open.length
          ? h(
              "ul",
              { class: "counts", "aria-label": `Open alerts of ${d.name}` },
              open.map((a) => h("li", null, badge(a.state), " ", h("a", { href: "#/alerts" }, a.rule))),
            )
          : null,
        h("div", { class: "grid" }, charts),
      );
    }),
  );
  main.append(...sections);
}
