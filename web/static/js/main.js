// The application shell: who is signed in, the top bar, and hash routes to screens.
// Screens are modules loaded on first use; each exports render(main, params, ctx) and may
// return a cleanup function (stop polling, abort a stream) called when the screen changes.

import { get, post } from "./api.js";
import { renderLogin, langSwitch, passwordForm } from "./auth.js";
import { focusFirst, h, replace } from "./dom.js";
import { t } from "./i18n.js";
import { errorBox, notifyError, spinner } from "./ui.js";

const ROUTES = [
  [/^#\/chat(?:\/(\d+))?$/, () => import("./chat.js"), (m) => ({ conversationId: m[1] ? Number(m[1]) : null })],
  [/^#\/account$/, null, () => ({})],
  [/^#\/admin\/libraries\/(\d+)(?:\/(\w+))?$/, () => import("./admin/library.js"), (m) => ({ libraryId: Number(m[1]), tab: m[2] || "documents" })],
  [/^#\/admin\/libraries$/, () => import("./admin/libraries.js"), () => ({})],
  [/^#\/admin\/users$/, () => import("./admin/users.js"), () => ({})],
  [/^#\/admin\/groups$/, () => import("./admin/groups.js"), () => ({})],
  [/^#\/admin\/keys$/, () => import("./admin/keys.js"), () => ({})],
  [/^#\/admin\/audit$/, () => import("./admin/audit.js"), () => ({})],
  [/^#\/admin\/feedback$/, () => import("./admin/feedback.js"), () => ({})],
  [/^#\/admin\/status$/, () => import("./admin/status.js"), () => ({})],
];

const app = document.getElementById("app");
const ctx = {
  me: null,
  /** Is the signed-in user allowed into the management screens at all? */
  get canManage() {
    return Boolean(this.me && (this.me.role === "admin" || this.me.role === "librarian"));
  },
  get isAdmin() {
    return Boolean(this.me && this.me.role === "admin");
  },
  navigate(hash, { replaceState = false } = {}) {
    if (replaceState) history.replaceState(null, "", hash);
    else history.pushState(null, "", hash);
    route();
  },
  /** Render the current screen again (after an error, with "Retry"). */
  refresh() {
    currentHash = null;
    route();
  },
  /** Change the address without re-rendering (a new conversation got its id). */
  setHash(hash) {
    history.replaceState(null, "", hash);
    currentHash = hash;
  },
};

let cleanup = null;
let currentHash = null;
let main = null;

function navLink(hash, label, active) {
  return h("a", { href: hash, class: ["nav-link", active && "active"], "aria-current": active ? "page" : null }, label);
}

function shell() {
  const hash = location.hash || "#/chat";
  const user = ctx.me;
  const menu = h(
    "details",
    { class: "user-menu" },
    h("summary", { "aria-label": t("nav_account") }, h("span", { class: "avatar", "aria-hidden": "true" }, (user.display_name || user.username).slice(0, 1).toUpperCase()), h("span", { class: "user-name" }, user.display_name || user.username)),
    h(
      "div",
      { class: "menu" },
      h("a", { href: "#/account", class: "menu-item" }, t("nav_account")),
      h(
        "button",
        {
          type: "button",
          class: "menu-item",
          on: {
            click: async () => {
              try {
                await post("/auth/logout");
              } catch {
                /* signed out anyway */
              }
              ctx.me = null;
              history.replaceState(null, "", "#/chat");
              boot();
            },
          },
        },
        t("sign_out"),
      ),
    ),
  );
  main = h("main", { id: "main", class: "main", tabindex: "-1" });
  replace(
    app,
    h(
      "header",
      { class: "topbar" },
      h("a", { href: "#/chat", class: "brand", "aria-label": t("app_name") }, h("span", { class: "logo-mark", "aria-hidden": "true" }, "知"), h("span", { class: "brand-name" }, t("app_name"))),
      h(
        "nav",
        { class: "topnav", "aria-label": "main" },
        navLink("#/chat", t("nav_chat"), hash.startsWith("#/chat")),
        ctx.canManage ? navLink("#/admin/libraries", t("nav_admin"), hash.startsWith("#/admin")) : null,
      ),
      h("div", { class: "topbar-end" }, langSwitch(), menu),
    ),
    main,
  );
}

async function route() {
  if (!ctx.me) return;
  let hash = location.hash;
  if (!hash.startsWith("#/")) {
    if (hash && currentHash) return; // an in-page anchor (#main, #source-2): not a screen
    hash = "#/chat";
    history.replaceState(null, "", hash);
  }
  if (hash === currentHash) return;
  currentHash = hash;
  if (cleanup) {
    try {
      cleanup();
    } catch {
      /* the old screen is gone anyway */
    }
    cleanup = null;
  }
  if (ctx.me.must_change_password) hash = "#/account";
  shell();
  const found = ROUTES.find(([re]) => re.test(hash));
  if (!found || (hash.startsWith("#/admin") && !ctx.canManage)) {
    ctx.navigate("#/chat", { replaceState: true });
    return;
  }
  const [re, loader, params] = found;
  const match = hash.match(re);
  if (!loader) {
    renderAccount();
    return;
  }
  replace(main, spinner());
  try {
    const view = await loader();
    if (currentHash !== hash) return; // the user moved on while it loaded
    cleanup = (await view.render(main, params(match), ctx)) || null;
    focusFirst(main);
  } catch (err) {
    replace(main, errorBox(err, t("retry"), () => {
      currentHash = null;
      route();
    }));
  }
}

function renderAccount() {
  const forced = ctx.me.must_change_password;
  replace(
    main,
    h(
      "section",
      { class: "page" },
      h("h1", {}, t("pw_title")),
      h("p", { class: "muted" }, `${ctx.me.username} · ${ctx.me.role}`),
      passwordForm(forced, (me) => {
        ctx.me = me;
        currentHash = null;
        if (forced) ctx.navigate("#/chat", { replaceState: true });
        else route();
      }),
    ),
  );
  focusFirst(main);
}

async function boot() {
  currentHash = null;
  try {
    ctx.me = await get("/auth/me");
  } catch (err) {
    if (err.status !== 401) {
      replace(app, h("main", { id: "main", class: "page" }, errorBox(err, t("retry"), boot)));
      return;
    }
    ctx.me = null;
    renderLogin(app, (user) => {
      ctx.me = user;
      route();
    });
    return;
  }
  route();
}

window.addEventListener("hashchange", route);
window.addEventListener("popstate", route);
window.addEventListener("zhiku:lang", () => {
  if (!ctx.me) {
    boot();
    return;
  }
  currentHash = null;
  route();
});
window.addEventListener("zhiku:signed-out", () => {
  if (ctx.me) {
    ctx.me = null;
    notifyError({ status: 401, code: "unauthorized", message: "" });
    boot();
  }
});
window.addEventListener("zhiku:password-change", () => {
  if (ctx.me && !ctx.me.must_change_password) {
    ctx.me.must_change_password = true;
    currentHash = null;
    route();
  }
});

boot();
