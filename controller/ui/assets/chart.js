// A line chart drawn as SVG: the average of each bucket as a line over the min–max band,
// with time and value axes. No library; the summary endpoint has done the aggregation.

import { h, num, s } from "./dom.js";

const W = 640;
const H = 220;
const PAD = { left: 52, right: 12, top: 12, bottom: 28 };

function niceTicks(lo, hi, count) {
  if (lo === hi) {
    const d = Math.abs(lo) * 0.1 || 1;
    lo -= d;
    hi += d;
  }
  const raw = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((st) => st >= raw) || raw;
  const ticks = [Math.floor(lo / step) * step];
  // Up to the first tick at or above the highest value, so that nothing is drawn off the top.
  while (ticks[ticks.length - 1] < hi) ticks.push(Number((ticks[ticks.length - 1] + step).toFixed(10)));
  if (ticks.length < 2) ticks.push(Number((ticks[0] + step).toFixed(10)));
  return ticks;
}

function clock(t, spanMs) {
  const d = new Date(t);
  return spanMs > 36 * 3600 * 1000
    ? d.toLocaleDateString(undefined, { month: "short", day: "numeric" })
    : d.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" });
}

/**
 * Draws `buckets` ([{start, min, max, avg, count}]) from `from` to `to` (Date). `label`
 * names the series for screen readers.
 */
export function lineChart(buckets, from, to, label) {
  const points = buckets
    .map((b) => ({ t: new Date(b.start ?? b.bucket ?? b.time).getTime(), avg: b.avg, min: b.min ?? b.avg, max: b.max ?? b.avg }))
    .filter((p) => Number.isFinite(p.t) && Number.isFinite(p.avg))
    .sort((a, b) => a.t - b.t);
  if (!points.length) {
    return h("p", { class: "muted" }, `No readings of ${label} in this period.`);
  }
  const t0 = from.getTime();
  const t1 = to.getTime();
  const lo = Math.min(...points.map((p) => p.min));
  const hi = Math.max(...points.map((p) => p.max));
  const ticks = niceTicks(lo, hi, 4);
  const y0 = ticks[0];
  const y1 = ticks[ticks.length - 1];
  const x = (t) => PAD.left + ((t - t0) / (t1 - t0 || 1)) * (W - PAD.left - PAD.right);
  const y = (v) => H - PAD.bottom - ((v - y0) / (y1 - y0 || 1)) * (H - PAD.top - PAD.bottom);
  const f = (n) => n.toFixed(1);

  const band =
    points.map((p, i) => `${i ? "L" : "M"}${f(x(p.t))},${f(y(p.max))}`).join("") +
    points
      .slice()
      .reverse()
      .map((p) => `L${f(x(p.t))},${f(y(p.min))}`)
      .join("") +
    "Z";
  const line = points.map((p, i) => `${i ? "L" : "M"}${f(x(p.t))},${f(y(p.avg))}`).join("");

  const xTicks = [];
  for (let i = 0; i <= 4; i++) xTicks.push(t0 + ((t1 - t0) * i) / 4);
  const last = points[points.length - 1];
  const summary = `${label}: ${points.length} points, from ${num(lo)} to ${num(hi)}, latest average ${num(last.avg)}`;

  return s(
    "svg",
    { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": summary, "data-points": points.length },
    s("title", null, summary),
    ticks.map((v) =>
      s(
        "g",
        null,
        s("line", { class: "grid-line", x1: PAD.left, x2: W - PAD.right, y1: f(y(v)), y2: f(y(v)) }),
        s("text", { x: PAD.left - 6, y: f(y(v) + 4), "text-anchor": "end" }, num(v)),
      ),
    ),
    xTicks.map((t, i) =>
      s("text", { x: f(x(t)), y: H - 8, "text-anchor": i === 0 ? "start" : i === xTicks.length - 1 ? "end" : "middle" }, clock(t, t1 - t0)),
    ),
    s("line", { class: "axis", x1: PAD.left, x2: PAD.left, y1: PAD.top, y2: H - PAD.bottom }),
    s("line", { class: "axis", x1: PAD.left, x2: W - PAD.right, y1: H - PAD.bottom, y2: H - PAD.bottom }),
    s("path", { class: "band", d: band }),
    s("path", { class: "line", d: line }),
    points.length === 1 ? s("circle", { cx: f(x(last.t)), cy: f(y(last.avg)), r: 3, class: "line" }) : null,
  );
}
