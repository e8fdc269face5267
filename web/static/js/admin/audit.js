// The audit log (administrators only): filter by action, user and time; page through it
// ("Load more"); export what the filters match as CSV or JSON Lines.

import { V1, get } from "../api.js";
import { field, h, replace, uid } from "../dom.js";
import { addStrings, locale, t } from "../i18n.js";
import { errorBox, spinner } from "../ui.js";
import { adminFrame } from "./shell.js";
import { cardTable, invalid, pageHead, refuseUnlessAdmin, userLabel, userMap } from "./kit.js";

addStrings({
  en: {
    aud_title: "Audit log",
    aud_intro: "Every sign-in, change of access and administrative action, oldest first. Exports are themselves recorded.",
    aud_filters: "Filters",
    aud_action: "Action",
    aud_action_hint: "An exact action, or a prefix ending in “.” such as “login.”.",
    aud_action_placeholder: "e.g. login. or user.create",
    aud_user: "User",
    aud_any_user: "Anyone",
    aud_since: "From",
    aud_until: "Until",
    aud_since_hint: "Local time; empty: from the first event.",
    aud_apply: "Apply",
    aud_reset: "Clear filters",
    aud_time: "Time",
    aud_actor: "User",
    aud_key: "API key",
    aud_target: "Target",
    aud_ip: "Client IP",
    aud_detail: "Detail",
    aud_none: "No events match these filters.",
    aud_more: "Load more",
    aud_shown: "{n} events shown",
    aud_all_shown: "{n} events — all shown",
    aud_export: "Export",
    aud_export_csv: "Export CSV",
    aud_export_jsonl: "Export JSONL",
    aud_export_hint: "Exports everything the applied filters match, not just the rows shown.",
    aud_bad_range: "“Until” must be after “From”.",
    aud_system: "system",
    aud_tried: "The username that was tried",
    aud_common: "Common actions",
    aud_act_login: "sign-ins (all)",
    aud_act_login_failure: "failed sign-ins",
    aud_act_login_lockout: "account lockouts",
    aud_act_user: "user changes (all)",
    aud_act_password: "password changes",
    aud_act_group: "department changes",
    aud_act_grant: "access grants",
    aud_act_library: "library changes",
    aud_act_document: "document actions",
    aud_act_api_key: "API keys",
    aud_act_audit: "audit exports",
    aud_act_feedback: "feedback",
    aud_act_lexicon: "sensitive-word list",
  },
  zh: {
    aud_title: "审计日志",
    aud_intro: "所有登录、权限变更和管理操作，按时间先后排列。导出操作本身也会被记录。",
    aud_filters: "筛选",
    aud_action: "操作",
    aud_action_hint: "完整的操作名，或以“.”结尾的前缀，如“login.”。",
    aud_action_placeholder: "如 login. 或 user.create",
    aud_user: "用户",
    aud_any_user: "任何人",
    aud_since: "起始时间",
    aud_until: "截止时间",
    aud_since_hint: "本地时间；留空表示从第一条记录开始。",
    aud_apply: "应用",
    aud_reset: "清除筛选",
    aud_time: "时间",
    aud_actor: "用户",
    aud_key: "API 密钥",
    aud_target: "对象",
    aud_ip: "客户端 IP",
    aud_detail: "详情",
    aud_none: "没有符合条件的记录。",
    aud_more: "加载更多",
    aud_shown: "已显示 {n} 条记录",
    aud_all_shown: "共 {n} 条记录，已全部显示",
    aud_export: "导出",
    aud_export_csv: "导出 CSV",
    aud_export_jsonl: "导出 JSONL",
    aud_export_hint: "导出已应用筛选条件匹配的全部记录，而不仅是当前显示的行。",
    aud_bad_range: "截止时间必须晚于起始时间。",
    aud_system: "系统",
    aud_tried: "尝试登录的用户名",
    aud_common: "常用操作",
    aud_act_login: "登录（全部）",
    aud_act_login_failure: "登录失败",
    aud_act_login_lockout: "账户锁定",
    aud_act_user: "用户变更（全部）",
    aud_act_password: "密码修改",
    aud_act_group: "部门变更",
    aud_act_grant: "访问授权",
    aud_act_library: "知识库变更",
    aud_act_document: "文档操作",
    aud_act_api_key: "API 密钥",
    aud_act_audit: "审计导出",
    aud_act_feedback: "用户反馈",
    aud_act_lexicon: "敏感词表",
  },
});

// [value, label key]: prefixes (ending in ".") match every action that starts with them.
const COMMON_ACTIONS = [
  ["login.", "aud_act_login"],
  ["login.failure", "aud_act_login_failure"],
  ["login.lockout", "aud_act_login_lockout"],
  ["user.", "aud_act_user"],
  ["password.", "aud_act_password"],
  ["group.", "aud_act_group"],
  ["grant.", "aud_act_grant"],
  ["library.", "aud_act_library"],
  ["document.", "aud_act_document"],
  ["api_key.", "aud_act_api_key"],
  ["audit.", "aud_act_audit"],
  ["feedback.", "aud_act_feedback"],
  ["lexicon.", "aud_act_lexicon"],
];
const PAGE = 100;
// The log is paged oldest first: by default show the last week, not the first events ever.
const DEFAULT_DAYS = 7;

/** A Date as a datetime-local value in local time ("2024-05-01T09:30"). */
function localInput(d) {
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

/** A datetime-local value ("2024-05-01T09:30", local time) as an ISO 8601 instant. */
function toIso(local) {
  if (!local) return null;
  const d = new Date(local);
  return Number.isNaN(d.getTime()) ? null : d.toISOString();
}

/** Date and time to the second, in the UI language. */
function exactTime(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso || "–");
  return d.toLocaleString(locale(), { dateStyle: "medium", timeStyle: "medium" });
}

function compactJson(value) {
  if (!value || (typeof value === "object" && !Object.keys(value).length)) return "";
  try {
    return JSON.stringify(value);
  } catch {
    return String(value);
  }
}

export async function render(main, _params, ctx) {
  const content = adminFrame(main, "audit", ctx);
  if (refuseUnlessAdmin(content, ctx, t("aud_title"))) return;

  const state = { filters: {}, items: [], next: null, users: new Map(), controller: null };

  // --- filters --------------------------------------------------------------------------------
  const listId = uid("actions");
  const action = h("input", { type: "text", list: listId, maxlength: 200, autocomplete: "off", spellcheck: "false", autocapitalize: "off", placeholder: t("aud_action_placeholder") });
  const actionList = h("datalist", { id: listId }, COMMON_ACTIONS.map(([value, label]) => h("option", { value, label: t(label) })));
  const userSelect = h("select", {}, h("option", { value: "" }, t("aud_any_user")));
  const since = h("input", { type: "datetime-local", step: 60, value: localInput(new Date(Date.now() - DEFAULT_DAYS * 86400000)) });
  const until = h("input", { type: "datetime-local", step: 60 });
  const message = h("div", { class: "form-message", "aria-live": "assertive" });
  const apply = h("button", { type: "submit", class: "btn btn-primary" }, t("aud_apply"));
  const reset = h(
    "button",
    {
      type: "button",
      class: "btn",
      on: {
        click: () => {
          action.value = "";
          userSelect.value = "";
          since.value = "";
          until.value = "";
          applyFilters();
        },
      },
    },
    t("aud_reset"),
  );
  const form = h(
    "form",
    {
      class: "card aud-filters",
      "aria-label": t("aud_filters"),
      on: {
        submit: (e) => {
          e.preventDefault();
          applyFilters();
        },
      },
    },
    h(
      "div",
      { class: "filter-grid" },
      field(t("aud_action"), action, t("aud_action_hint")),
      actionList,
      field(t("aud_user"), userSelect),
      field(t("aud_since"), since, t("aud_since_hint")),
      field(t("aud_until"), until),
    ),
    message,
    h("div", { class: "row" }, apply, reset),
  );

  // --- export links ---------------------------------------------------------------------------
  const csv = h("a", { class: "btn btn-small", download: "" }, t("aud_export_csv"));
  const jsonl = h("a", { class: "btn btn-small", download: "" }, t("aud_export_jsonl"));
  const exportHintId = uid("hint");
  csv.setAttribute("aria-describedby", exportHintId);
  jsonl.setAttribute("aria-describedby", exportHintId);
  const exportBar = h("div", { class: "row aud-export" }, csv, jsonl, h("small", { class: "hint", id: exportHintId }, t("aud_export_hint")));

  // --- results --------------------------------------------------------------------------------
  const tableBox = h("div", { class: "adm-list" });
  const summary = h("p", { class: "muted small", role: "status", "aria-live": "polite" });
  const more = h("button", { type: "button", class: "btn", hidden: true, on: { click: () => loadPage(true) } }, t("aud_more"));
  replace(
    content,
    pageHead(t("aud_title")),
    h("p", { class: "muted" }, t("aud_intro")),
    form,
    exportBar,
    tableBox,
    h("div", { class: "pager aud-pager" }, summary, more),
  );

  function query(extra = {}) {
    const q = new URLSearchParams();
    const f = state.filters;
    if (f.action) q.append("action", f.action);
    if (f.actor_user_id) q.set("actor_user_id", f.actor_user_id);
    if (f.since) q.set("since", f.since);
    if (f.until) q.set("until", f.until);
    for (const [k, v] of Object.entries(extra)) if (v !== null && v !== undefined && v !== "") q.set(k, String(v));
    return q;
  }

  function updateExports() {
    csv.href = `${V1}/audit/export?${query({ format: "csv" })}`;
    jsonl.href = `${V1}/audit/export?${query({ format: "jsonl" })}`;
  }

  function applyFilters() {
    replace(message);
    const filters = {
      action: action.value.trim(),
      actor_user_id: userSelect.value,
      since: toIso(since.value),
      until: toIso(until.value),
    };
    if (filters.since && filters.until && filters.since >= filters.until) {
      replace(message, errorBox(invalid(t("aud_bad_range"))));
      until.focus();
      return;
    }
    state.filters = filters;
    updateExports();
    loadPage(false);
  }

  function actorCell(ev) {
    if (ev.actor_user_id !== null && ev.actor_user_id !== undefined) return userLabel(state.users, ev.actor_user_id);
    if (ev.actor_api_key_id !== null && ev.actor_api_key_id !== undefined) return "–";
    // a failed sign-in has no actor: show the name that was tried
    if (ev.action.startsWith("login.") && ev.detail && ev.detail.username) {
      return h("span", { class: "muted", title: t("aud_tried") }, `“${ev.detail.username}”`);
    }
    return h("span", { class: "muted" }, t("aud_system"));
  }

  function showTable() {
    replace(
      tableBox,
      cardTable(
        [
          [t("aud_time"), (ev) => h("time", { datetime: ev.at }, exactTime(ev.at)), { nowrap: true }],
          [t("aud_actor"), actorCell],
          [t("aud_key"), (ev) => (ev.actor_api_key_id !== null && ev.actor_api_key_id !== undefined ? `#${ev.actor_api_key_id}` : "–")],
          [t("aud_action"), (ev) => h("code", {}, ev.action)],
          [t("aud_target"), (ev) => (ev.target_type ? `${ev.target_type}${ev.target_id ? ` #${ev.target_id}` : ""}` : "–"), { wrap: true }],
          [t("aud_ip"), (ev) => ev.client_ip || "–", { nowrap: true }],
          [t("aud_detail"), (ev) => h("code", { class: "json" }, compactJson(ev.detail)), { wrap: true }],
        ],
        state.items,
        { caption: t("aud_title"), empty: t("aud_none") },
      ),
    );
    more.hidden = state.next === null;
    summary.textContent = state.items.length
      ? t(state.next === null ? "aud_all_shown" : "aud_shown", { n: state.items.length })
      : "";
  }

  async function loadPage(append) {
    if (state.controller) state.controller.abort();
    const controller = new AbortController();
    state.controller = controller;
    if (!append) {
      state.items = [];
      state.next = null;
      replace(tableBox, spinner());
      more.hidden = true;
      summary.textContent = "";
    } else {
      more.disabled = true;
      more.setAttribute("aria-busy", "true");
    }
    const params = Object.fromEntries(query({ limit: PAGE, after_id: append ? state.next : null }));
    try {
      const page = await get("/audit", params, { signal: controller.signal });
      if (state.controller !== controller) return;
      const firstNew = state.items.length;
      state.items = state.items.concat(page.items || []);
      state.next = page.next_after_id ?? null;
      showTable();
      if (append) {
        // keep keyboard users where the new rows begin
        const rows = tableBox.querySelectorAll("tbody tr");
        const target = rows[firstNew];
        if (target) {
          target.setAttribute("tabindex", "-1");
          target.focus();
        }
      }
    } catch (err) {
      if (err.name === "AbortError") return;
      if (append) {
        tableBox.append(errorBox(err, t("retry"), () => loadPage(true)));
      } else {
        replace(tableBox, errorBox(err, t("retry"), () => loadPage(false)));
      }
    } finally {
      if (state.controller === controller) state.controller = null;
      more.disabled = false;
      more.removeAttribute("aria-busy");
    }
  }

  // users for the filter and the actor column (a failure leaves ids as they are)
  try {
    const users = await get("/users");
    state.users = userMap(users);
    for (const u of [...users].sort((a, b) => a.username.localeCompare(b.username))) {
      userSelect.append(h("option", { value: String(u.id) }, u.display_name && u.display_name !== u.username ? `${u.username} (${u.display_name})` : u.username));
    }
  } catch {
    /* the log still loads; actors show as ids */
  }
  applyFilters();
  return () => state.controller && state.controller.abort();
}
