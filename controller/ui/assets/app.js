// The page's entry point: sign-in, the hash router, the navigation and the live event
// stream. Each page module exports `title`, `render(main, params)` and optionally
// `follows(event, params)` (whether a live event should redraw it).

import { can, currentUser, followEvents, login, logout, onSession, refresh } from "./api.js";
import { h, replace } from "./dom.js";
import * as overview from "./pages/overview.js";
import * as runs from "./pages/runs.js";
import * as resources from "./pages/resources.js";
import * as devices from "./pages/devices.js";
import * as alerts from "./pages/alerts.js";
import * as audit from "./pages/audit.js";

const PAGES = [
  { path: "", nav: "Overview", page: overview },
  { path: "runs", nav: "Runs", page: runs },
  { path: "resources", nav: "Resources", page: resources },
  { path: "devices", nav: "Devices", page: devices },
  { path: "alerts", nav: "Alerts", page: alerts },
  { path: "audit", nav: "Audit", page: audit, role: "admin" },
];

const main = document.getElementById("main");
const nav = document.getElementById("nav");
const account = document.getElementById("account");
const live = document.getElementById("live");
const announcer = document.getElementById("announcer");

let stopEvents = null;
let current = null; // {entry, params}
let redraw = null;
let ticker = null; // redraws pages that follow no event (readings) every `refreshEvery` ms

/** `#/runs/12?status=failed` -> {name: "runs", rest: ["12"], query: URLSearchParams}. */
function parseHash() {
  const raw = location.hash.replace(/^#\/?/, "");
  const [path, qs] = raw.split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  return { name: parts[0] || "", rest: parts.slice(1), query: new URLSearchParams(qs || "") };
}

function drawNav() {
  const { name } = parseHash();
  replace(
    nav,
    h(
      "ul",
      null,
      PAGES.filter((p) => !p.role || can(p.role)).map((p) =>
        h(
          "li",
          null,
          h("a", { href: `#/${p.path}`, "aria-current": p.path === name ? "page" : null }, p.nav),
        ),
      ),
    ),
  );
  const user = currentUser();
  if (user) {
    replace(
      account,
      h("span", { class: "who" }, user.name, " ", h("span", { class: "role" }, `(${user.role})`)),
      h("button", { type: "button", class: "link", onclick: () => logout().then(route) }, "Sign out"),
    );
  } else {
    replace(account);
  }
}

function setLive(state) {
  live.dataset.state = state;
  live.textContent = state === "live" ? "Live" : state === "connecting" ? "Connecting…" : "Offline, retrying";
}

function announce(text) {
  announcer.textContent = text;
}

function onEvent(event) {
  if (event.type === "run" && event.run_id !== undefined) {
    announce(`Run ${event.run_id} is now ${String(event.status).replaceAll("_", " ")}`);
  }
  if (!current) return;
  const { entry, params } = current;
  const follows = entry.page.follows ? entry.page.follows(event, params) : true;
  if (!follows) return;
  // Events come in bursts (a run and each of its actions); redraw once per burst.
  clearTimeout(redraw);
  redraw = setTimeout(redrawUnlessTyping, 150);
}

/** Redraws the page, but not under someone typing: then once they leave the field. */
function redrawUnlessTyping() {
  const active = document.activeElement;
  const typing =
    active && main.contains(active) && (active.tagName === "TEXTAREA" || (active.tagName === "INPUT" && active.value !== ""));
  if (!typing) {
    draw(false);
    return;
  }
  active.addEventListener("blur", () => {
    clearTimeout(redraw);
    redraw = setTimeout(redrawUnlessTyping, 150);
  }, { once: true });
}

function signInForm(message) {
  const error = h("p", { class: "notice error", role: "alert", hidden: !message }, message || "");
  const form = h(
    "form",
    { class: "card signin", "aria-labelledby": "signin-title" },
    h("h1", { id: "signin-title", tabindex: "-1" }, "Sign in to mycopod"),
    h("label", { for: "username" }, "User name"),
    h("input", { id: "username", name: "username", autocomplete: "username", required: true, autocapitalize: "none" }),
    h("label", { for: "password" }, "Password"),
    h("input", { id: "password", name: "password", type: "password", autocomplete: "current-password", required: true }),
    error,
    h("button", { type: "submit", class: "primary" }, "Sign in"),
  );
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const button = form.querySelector("button");
    button.disabled = true;
    error.hidden = true;
    try {
      await login(form.username.value.trim(), form.password.value);
    } catch (err) {
      error.textContent =
        err.status === 401 ? "Wrong user name or password." : err.status === 429 ? "Too many attempts; try again later." : err.message;
      error.hidden = false;
      button.disabled = false;
      form.password.focus();
    }
  });
  return form;
}

async function draw(moveFocus) {
  const { name, rest, query } = parseHash();
  drawNav();
  if (!currentUser()) {
    current = null;
    clearInterval(ticker);
    document.title = "Sign in · mycopod";
    replace(main, signInForm());
    main.querySelector("#username").focus();
    return;
  }
  const entry = PAGES.find((p) => p.path === name);
  if (!entry) {
    current = null;
    clearInterval(ticker);
    replace(main, h("h1", { tabindex: "-1" }, "Not found"), h("p", null, h("a", { href: "#/" }, "Back to the overview")));
    return;
  }
  const params = { rest, query };
  const sameEntry = current && current.entry === entry;
  current = { entry, params };
  if (!sameEntry) {
    clearInterval(ticker);
    ticker = entry.page.refreshEvery ? setInterval(redrawUnlessTyping, entry.page.refreshEvery) : null;
  }
  const focused = moveFocus ? null : document.activeElement && document.activeElement.id;
  const scroll = window.scrollY;
  const fresh = h("div");
  try {
    await entry.page.render(fresh, params);
  } catch (err) {
    replace(fresh, h("h1", { tabindex: "-1" }, entry.nav), h("p", { class: "notice error", role: "alert" }, err.message));
  }
  // A newer navigation started while this page loaded: leave the screen to it.
  if (current === null || current.entry !== entry || current.params !== params) return;
  replace(main, ...fresh.childNodes);
  const heading = main.querySelector("h1");
  document.title = `${heading ? heading.textContent : entry.nav} · mycopod`;
  if (moveFocus && heading) {
    heading.setAttribute("tabindex", "-1");
    heading.focus();
  } else if (focused) {
    const again = document.getElementById(focused);
    if (again) again.focus();
    window.scrollTo(0, scroll);
  }
}

function route() {
  draw(true);
}

onSession((user) => {
  if (stopEvents) stopEvents();
  stopEvents = null;
  if (user) stopEvents = followEvents(onEvent, setLive);
  else setLive("offline");
  draw(true);
});

window.addEventListener("hashchange", route);

// The skip link moves focus to the content; as a plain `#main` link it would be a route.
document.querySelector("a.skip").addEventListener("click", (e) => {
  e.preventDefault();
  main.focus();
});

// Resume a session from the refresh cookie, if there is one; otherwise show the sign-in.
refresh().then((ok) => {
  if (!ok) draw(true);
});
