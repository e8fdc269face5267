// API keys (administrators and librarians): the keys (every key for admins, their own for
// librarians), creating one — shown once, with a copy button — and revoking.

import { del, get, post } from "../api.js";
import { field, formatTime, h, replace, uid } from "../dom.js";
import { addStrings, locale, t } from "../i18n.js";
import { badge, busy, confirmDialog, errorBox, notify, openDialog, spinner } from "../ui.js";
import { adminFrame } from "./shell.js";
import { cardTable, copyText, formDialog, invalid, pageHead, userLabel, userMap } from "./kit.js";

addStrings({
  en: {
    key_title: "API keys",
    key_intro: "Office systems call Zhiku with an API key. A key acts for the person who created it, limited to its scopes and libraries.",
    key_new: "New API key",
    key_name: "Name",
    key_name_hint: "What the key is for, e.g. “OA system” — shown in the audit log.",
    key_prefix: "Prefix",
    key_owner: "Owner",
    key_scopes: "Scopes",
    key_libraries: "Libraries",
    key_libraries_all: "All of the owner's",
    key_expires: "Expires",
    key_last_used: "Last used",
    key_status: "Status",
    key_active: "Active",
    key_revoked: "Revoked",
    key_expired: "Expired",
    key_revoke: "Revoke",
    key_revoke_label: "Revoke the key {name}",
    key_revoke_confirm: "Revoke the key “{name}”? Systems using it are refused from their next request on. This cannot be undone.",
    key_revoked_done: "Key “{name}” revoked.",
    key_none: "No API keys yet.",
    key_hide_inactive: "Hide revoked and expired keys",
    key_library_n: "library #{id}",
    key_scope_search: "Search passages in the key's libraries.",
    key_scope_chat: "Ask questions and get cited answers (also the OpenAI-compatible endpoint).",
    key_scope_ingest: "Upload and re-ingest documents (where the owner may write).",
    key_scope_act_as: "Act for a named user (X-Zhiku-User header): sees only what both the key and that user may read.",
    key_scope_metrics: "Read the Prometheus metrics at /metrics (administrators only).",
    key_scopes_legend: "Scopes — what the key may do",
    key_scopes_required: "Choose at least one scope.",
    key_libs_legend: "Libraries the key may use",
    key_libs_hint_admin: "None chosen: every library you may read, now and later.",
    key_libs_hint_librarian: "Choose the libraries the key is for (you can only choose libraries you manage).",
    key_libs_required: "Choose at least one library.",
    key_libs_none_managed: "You do not manage any library, so you cannot create a key. Ask an administrator.",
    key_expiry: "Expires after (days)",
    key_expiry_hint: "1–3650 days; leave empty for a key that never expires.",
    key_expiry_bad: "The expiry must be a whole number of days from 1 to 3650.",
    key_created_title: "Your new API key",
    key_created_warn: "Copy the key now and store it safely. It will not be shown again — Zhiku keeps only a fingerprint of it.",
    key_secret: "API key",
    key_usage: "Send it with every request as: Authorization: Bearer <key>",
    key_copy: "Copy key",
    key_done: "I have stored it",
    key_create: "Create key",
  },
  zh: {
    key_title: "API 密钥",
    key_intro: "办公系统通过 API 密钥调用知库。密钥代表创建者本人行事，并受其权限范围和知识库的限制。",
    key_new: "新建 API 密钥",
    key_name: "名称",
    key_name_hint: "密钥的用途，如“OA 系统”——会显示在审计日志中。",
    key_prefix: "前缀",
    key_owner: "所有者",
    key_scopes: "权限范围",
    key_libraries: "知识库",
    key_libraries_all: "所有者可用的全部知识库",
    key_expires: "到期时间",
    key_last_used: "最近使用",
    key_status: "状态",
    key_active: "有效",
    key_revoked: "已吊销",
    key_expired: "已过期",
    key_revoke: "吊销",
    key_revoke_label: "吊销密钥 {name}",
    key_revoke_confirm: "吊销密钥“{name}”？使用它的系统从下一次请求起将被拒绝。此操作无法撤销。",
    key_revoked_done: "已吊销密钥“{name}”。",
    key_none: "还没有 API 密钥。",
    key_hide_inactive: "隐藏已吊销和已过期的密钥",
    key_library_n: "知识库 #{id}",
    key_scope_search: "在密钥可用的知识库中检索段落。",
    key_scope_chat: "提问并获得带引用的回答（包括 OpenAI 兼容接口）。",
    key_scope_ingest: "上传文档和重新处理文档（限所有者可写的知识库）。",
    key_scope_act_as: "代表指定用户调用（X-Zhiku-User 请求头）：只能看到密钥和该用户都有权阅读的内容。",
    key_scope_metrics: "读取 /metrics 上的 Prometheus 监控指标（仅限管理员）。",
    key_scopes_legend: "权限范围——密钥可以做什么",
    key_scopes_required: "请至少选择一项权限范围。",
    key_libs_legend: "密钥可用的知识库",
    key_libs_hint_admin: "不选择：您可阅读的全部知识库（包括以后新增的）。",
    key_libs_hint_librarian: "选择密钥所用的知识库（只能选择您管理的知识库）。",
    key_libs_required: "请至少选择一个知识库。",
    key_libs_none_managed: "您没有管理任何知识库，因此无法创建密钥。请联系管理员。",
    key_expiry: "有效期（天）",
    key_expiry_hint: "1–3650 天；留空表示永不过期。",
    key_expiry_bad: "有效期必须是 1 到 3650 之间的整数天数。",
    key_created_title: "新的 API 密钥",
    key_created_warn: "请立即复制并妥善保存此密钥。它不会再次显示——知库只保存其指纹。",
    key_secret: "API 密钥",
    key_usage: "每次请求时这样发送：Authorization: Bearer <密钥>",
    key_copy: "复制密钥",
    key_done: "我已保存",
    key_create: "创建密钥",
  },
});

const SCOPES = ["search", "chat", "ingest", "act_as"];
const ADMIN_SCOPES = ["metrics"]; // only administrators may create keys with these
const HIDE_KEY = "zhiku.keys.hideInactive";

function isExpired(key) {
  return Boolean(key.expires_at) && new Date(key.expires_at).getTime() <= Date.now();
}

/** The secret, once: a copy button, and the warning that it will not be shown again. */
function showSecret(created) {
  return openDialog(t("key_created_title"), (close) => {
    const secret = h("code", { class: "secret", tabindex: "0", "aria-label": t("key_secret") }, created.key);
    const status = h("p", { class: "small muted", role: "status", "aria-live": "polite" });
    const copy = h(
      "button",
      {
        type: "button",
        class: "btn btn-primary",
        autofocus: true,
        on: {
          click: async () => {
            const ok = await copyText(created.key, secret);
            status.textContent = ok ? t("ak_copied") : t("ak_copy_manual");
          },
        },
      },
      t("key_copy"),
    );
    return h(
      "div",
      { class: "stack" },
      h("p", { class: "callout", role: "alert" }, t("key_created_warn")),
      h("p", { class: "small" }, h("strong", {}, created.name)),
      secret,
      status,
      h("p", { class: "small muted" }, t("key_usage")),
      h(
        "div",
        { class: "dialog-actions" },
        copy,
        h("button", { type: "button", class: "btn", on: { click: () => close(true) } }, t("key_done")),
      ),
    );
  });
}

export async function render(main, _params, ctx) {
  const content = adminFrame(main, "keys", ctx);
  if (!ctx.canManage) {
    replace(content, h("h1", {}, t("key_title")), errorBox(t("ak_managers_only")));
    return;
  }

  const state = { keys: [], libraries: [], users: new Map() };
  const list = h("div", { class: "adm-list" });
  const hide = h("input", {
    type: "checkbox",
    checked: localStorage.getItem(HIDE_KEY) === "1",
    on: {
      change: () => {
        localStorage.setItem(HIDE_KEY, hide.checked ? "1" : "0");
        showTable();
      },
    },
  });
  const newBtn = h("button", { type: "button", class: "btn btn-primary", on: { click: () => createKey() } }, "＋ ", t("key_new"));
  replace(
    content,
    pageHead(t("key_title"), newBtn),
    h("p", { class: "muted" }, t("key_intro")),
    h("div", { class: "form-inline" }, h("label", { class: "check" }, hide, h("span", {}, t("key_hide_inactive")))),
    list,
  );

  const libName = (id) => state.libraries.find((l) => l.id === id)?.name || t("key_library_n", { id });

  function statusCell(k) {
    if (k.revoked_at) {
      return h("span", { class: "stack-tight" }, badge(t("key_revoked"), "danger"), h("small", { class: "muted" }, formatTime(k.revoked_at, locale())));
    }
    if (isExpired(k)) return badge(t("key_expired"), "warn");
    return badge(t("key_active"), "ok");
  }

  function showTable() {
    const rows = state.keys
      .filter((k) => !hide.checked || (!k.revoked_at && !isExpired(k)))
      .sort((a, b) => Number(Boolean(a.revoked_at)) - Number(Boolean(b.revoked_at)) || b.id - a.id);
    replace(
      list,
      cardTable(
        [
          [t("key_name"), (k) => h("strong", {}, k.name), { wrap: true }],
          [t("key_prefix"), (k) => h("code", {}, `${k.prefix}…`)],
          [t("key_owner"), (k) => userLabel(state.users, k.owner_id)],
          [t("key_scopes"), (k) => h("span", { class: "badges" }, (k.scopes || []).map((s) => badge(s, "info")))],
          [t("key_libraries"), (k) => (k.library_ids && k.library_ids.length ? k.library_ids.map(libName).join(", ") : h("span", { class: "muted" }, t("key_libraries_all"))), { wrap: true }],
          [t("key_expires"), (k) => (k.expires_at ? formatTime(k.expires_at, locale()) : t("ak_never")), { nowrap: true }],
          [t("key_last_used"), (k) => (k.last_used_at ? formatTime(k.last_used_at, locale()) : t("ak_never")), { nowrap: true }],
          [t("key_status"), statusCell],
          [
            t("actions"),
            (k) =>
              k.revoked_at
                ? "–"
                : h(
                    "button",
                    {
                      type: "button",
                      class: "btn btn-small btn-danger",
                      "aria-label": t("key_revoke_label", { name: k.name }),
                      on: { click: (e) => revokeKey(k, e.currentTarget) },
                    },
                    t("key_revoke"),
                  ),
          ],
        ],
        rows,
        { caption: t("key_title"), empty: t("key_none"), rowClass: (k) => (k.revoked_at || isExpired(k) ? "row-dim" : null) },
      ),
    );
  }

  async function reload() {
    if (!state.keys.length) replace(list, spinner());
    const [keys, libraries, users] = await Promise.allSettled([get("/api-keys"), get("/libraries"), get("/users")]);
    if (keys.status === "rejected") {
      replace(list, errorBox(keys.reason, t("retry"), () => reload()));
      return;
    }
    state.keys = keys.value;
    if (libraries.status === "fulfilled") state.libraries = libraries.value;
    if (users.status === "fulfilled") state.users = userMap(users.value);
    showTable();
  }

  async function createKey() {
    const admin = ctx.isAdmin;
    const choosable = state.libraries.filter((l) => admin || l.permission === "manage").sort((a, b) => a.name.localeCompare(b.name));
    const name = h("input", { required: true, maxlength: 200, autocomplete: "off", autofocus: true });
    const scopeBoxes = (admin ? [...SCOPES, ...ADMIN_SCOPES] : SCOPES).map((s) => {
      const box = h("input", { type: "checkbox", value: s, checked: s === "search" || s === "chat" });
      const descId = uid("desc");
      box.setAttribute("aria-describedby", descId);
      return { box, row: h("label", { class: "check" }, box, h("span", {}, h("code", {}, s), h("small", { class: "muted", id: descId }, t(`key_scope_${s}`)))) };
    });
    const libBoxes = choosable.map((l) => {
      const box = h("input", { type: "checkbox", value: String(l.id) });
      return { box, row: h("label", { class: "check" }, box, h("span", {}, l.name)) };
    });
    const libHintId = uid("hint");
    const expiry = h("input", { type: "number", min: 1, max: 3650, step: 1, value: "365", inputmode: "numeric", class: "input-short" });
    const created = await formDialog(
      t("key_new"),
      () => [
        field(t("key_name"), name, t("key_name_hint")),
        h("fieldset", { class: "adm-fieldset" }, h("legend", {}, t("key_scopes_legend")), scopeBoxes.map((x) => x.row)),
        h(
          "fieldset",
          { class: "adm-fieldset", "aria-describedby": libHintId },
          h("legend", {}, t("key_libs_legend")),
          h("small", { class: "hint", id: libHintId }, admin ? t("key_libs_hint_admin") : choosable.length ? t("key_libs_hint_librarian") : t("key_libs_none_managed")),
          h("div", { class: "check-list" }, libBoxes.map((x) => x.row)),
        ),
        field(t("key_expiry"), expiry, t("key_expiry_hint")),
      ],
      async () => {
        const scopes = scopeBoxes.filter((x) => x.box.checked).map((x) => x.box.value);
        const libraryIds = libBoxes.filter((x) => x.box.checked).map((x) => Number(x.box.value));
        if (!scopes.length) throw invalid(t("key_scopes_required"));
        if (!admin && !libraryIds.length) throw invalid(choosable.length ? t("key_libs_required") : t("key_libs_none_managed"));
        const raw = expiry.value.trim();
        const days = raw === "" ? null : Number(raw);
        if (days !== null && (!Number.isInteger(days) || days < 1 || days > 3650)) throw invalid(t("key_expiry_bad"));
        return post("/api-keys", { name: name.value.trim(), scopes, library_ids: libraryIds, expires_in_days: days });
      },
      { submitLabel: t("key_create") },
    );
    if (created && created.key) {
      await showSecret(created);
      await reload();
      newBtn.focus();
    }
  }

  async function revokeKey(k, button) {
    if (!(await confirmDialog(t("key_revoke_confirm", { name: k.name }), t("key_revoke")))) return;
    await busy(button, async () => {
      await del(`/api-keys/${k.id}`);
      notify(t("key_revoked_done", { name: k.name }));
      await reload();
      newBtn.focus();
    });
  }

  await reload();
}
