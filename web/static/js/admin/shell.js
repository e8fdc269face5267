// The management area's frame: a side navigation (only the screens the role may use) and the
// content area each management screen renders into.

import { h, replace } from "../dom.js";
import { addStrings, t } from "../i18n.js";

addStrings({
  en: {
    adm_libraries: "Libraries",
    adm_users: "Users",
    adm_groups: "Departments",
    adm_keys: "API keys",
    adm_audit: "Audit log",
    adm_feedback: "Feedback",
    adm_status: "System status",
    adm_nav: "Management",
  },
  zh: {
    adm_libraries: "知识库",
    adm_users: "用户",
    adm_groups: "部门",
    adm_keys: "API 密钥",
    adm_audit: "审计日志",
    adm_feedback: "用户反馈",
    adm_status: "系统状态",
    adm_nav: "管理",
  },
});

// [route, label key, who may see it]
const SCREENS = [
  ["libraries", "adm_libraries", "manager"],
  ["users", "adm_users", "admin"],
  ["groups", "adm_groups", "admin"],
  ["keys", "adm_keys", "manager"],
  ["feedback", "adm_feedback", "manager"],
  ["audit", "adm_audit", "admin"],
  ["status", "adm_status", "admin"],
];

/** Render the frame into `main` with `active` highlighted; returns the content element. */
export function adminFrame(main, active, ctx) {
  const content = h("div", { class: "admin-content" });
  const nav = h(
    "nav",
    { class: "admin-nav", "aria-label": t("adm_nav") },
    SCREENS.filter(([, , who]) => who === "manager" || ctx.isAdmin).map(([route, label]) =>
      h("a", { href: `#/admin/${route}`, "aria-current": route === active ? "page" : null }, t(label)),
    ),
  );
  replace(main, h("div", { class: "admin-layout" }, nav, content));
  return content;
}

/** A data table: `columns` [[header, cell(row) → node|string, {num}]], `rows`. */
export function dataTable(columns, rows, { caption, empty } = {}) {
  if (!rows.length) return h("p", { class: "muted" }, empty || t("none"));
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      { class: "data" },
      caption ? h("caption", { class: "sr-only" }, caption) : null,
      h("thead", {}, h("tr", {}, columns.map(([head, , opts]) => h("th", { scope: "col", class: opts?.num ? "num" : null }, head)))),
      h("tbody", {}, rows.map((row) => h("tr", {}, columns.map(([, cell, opts]) => h("td", { class: opts?.num ? "num" : opts?.wrap ? "cell-wrap" : null }, cell(row)))))),
    ),
  );
}
