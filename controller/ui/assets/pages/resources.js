// Resources: every declared resource with its sync state, what differs, and when that last
// changed; filtered by sync state and by a name search.

import { get, list } from "../api.js";
import { badge, errorBox, h, notice, table, time, words } from "../dom.js";

export const title = "Resources";

export function follows(event) {
  return event.type === "controller" || event.type === "run";
}

export async function render(main, params) {
  const sync = params.query.get("sync") || "";
  const q = (params.query.get("q") || "").toLowerCase();
  main.append(h("h1", null, "Resources"));
  let resources;
  try {
    resources = list(await get("/resources"), "resources");
  } catch (err) {
    main.append(errorBox("Could not load resources", err));
    return;
  }
  const states = [...new Set(resources.map((r) => r.sync))].sort();
  const form = h(
    "form",
    { class: "filters", role: "search", "aria-label": "Filter resources" },
    h(
      "div",
      null,
      h("label", { for: "sync" }, "Sync state"),
      h("select", { id: "sync", name: "sync" }, h("option", { value: "" }, "any"), states.map((st) => h("option", { value: st, selected: st === sync }, words(st)))),
    ),
    h("div", null, h("label", { for: "q" }, "Name contains"), h("input", { id: "q", name: "q", value: q, autocomplete: "off" })),
    h("button", { type: "submit" }, "Filter"),
  );
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const p = new URLSearchParams();
    if (form.elements.sync.value) p.set("sync", form.elements.sync.value);
    if (form.elements.q.value.trim()) p.set("q", form.elements.q.value.trim());
    location.hash = `#/resources${p.toString() ? `?${p}` : ""}`;
  });
  main.append(form);
  const shown = resources.filter((r) => (!sync || r.sync === sync) && (!q || `${r.kind}/${r.name}`.toLowerCase().includes(q)));
  if (!shown.length) {
    main.append(notice("info", resources.length ? "No resource matches." : "Nothing declared yet."));
    return;
  }
  main.append(
    table(
      "Declared resources",
      ["Kind", "Name", "Sync", "Details", "Last change"],
      shown.map((r) =>
        h(
          "tr",
          null,
          h("td", null, r.kind),
          h("td", null, r.name),
          h("td", null, badge(r.sync)),
          h("td", null, (r.details || []).length ? h("ul", null, r.details.map((d) => h("li", null, h("code", null, d)))) : "—"),
          h("td", null, time(r.changed_at)),
        ),
      ),
    ),
  );
}
