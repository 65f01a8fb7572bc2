// Audit (admins): the append-only, hash-chained log, newest first, paged by cursor.

import { can, get, list } from "../api.js";
import { errorBox, h, notice, short, table, when } from "../dom.js";

export const title = "Audit";

export function follows() {
  return false;
}

export async function render(main, params) {
  main.append(h("h1", null, "Audit log"));
  if (!can("admin")) {
    main.append(notice("info", "Only admins can read the audit log."));
    return;
  }
  const before = params.query.get("before");
  let page;
  try {
    page = await get("/audit", { before, limit: 100 });
  } catch (err) {
    main.append(errorBox("Could not load the audit log", err));
    return;
  }
  const entries = list(page, "entries");
  if (!entries.length) {
    main.append(notice("info", "The log is empty."));
    return;
  }
  main.append(
    table(
      "Audit entries, newest first",
      ["#", "When", "Actor", "Event", "Subject", "Details", "Hash"],
      entries.map((e) =>
        h(
          "tr",
          null,
          h("td", { class: "num" }, String(e.seq)),
          h("td", null, when(e.at)),
          h("td", null, e.actor),
          h("td", null, h("code", null, e.event)),
          h("td", null, e.subject),
          h("td", null, h("code", null, JSON.stringify(e.details))),
          h("td", null, h("code", { title: e.hash }, short(e.hash))),
        ),
      ),
    ),
  );
  if (page && page.next_cursor) main.append(h("p", null, h("a", { href: `#/audit?before=${page.next_cursor}` }, "Older entries")));
}
