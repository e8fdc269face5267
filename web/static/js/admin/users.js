// Users (administrators only): the accounts with their role, departments and last sign-in;
// creating one with a temporary password; changing the role or display name; disabling,
// enabling, resetting the password, lifting a lockout and ending every sign-in.

import { get, patch, post } from "../api.js";
import { field, formatTime, h, replace } from "../dom.js";
import { addStrings, locale, t } from "../i18n.js";
import { badge, busy, confirmDialog, errorBox, notify, openDialog, spinner } from "../ui.js";
import { adminFrame } from "./shell.js";
import { cardTable, fieldFor, formDialog, invalid, pageHead, passwordInput, refuseUnlessAdmin } from "./kit.js";

addStrings({
  en: {
    usr_title: "Users",
    usr_new: "New user",
    usr_create_title: "New user",
    usr_username: "Username",
    usr_username_hint: "Used to sign in: 1–150 characters, no spaces. It cannot be changed later.",
    usr_display_name: "Display name",
    usr_role: "Role",
    usr_role_admin: "Administrator",
    usr_role_librarian: "Librarian",
    usr_role_staff: "Staff",
    usr_role_hint_admin: "Administrator: everything, including users and the audit log.",
    usr_role_hint_librarian: "Librarian: manages the libraries granted to them with “manage”.",
    usr_role_hint_staff: "Staff: reads and asks in the libraries granted to them or their departments.",
    usr_temp_password: "Temporary password",
    usr_temp_password_hint: "At least 12 characters, not the username and not a common password. The user must choose a new one at first sign-in — hand this one over safely.",
    usr_departments: "Departments",
    usr_status: "Status",
    usr_active: "Active",
    usr_disabled: "Disabled",
    usr_must_change: "Must change password",
    usr_last_login: "Last sign-in",
    usr_you: "you",
    usr_filter: "Filter users",
    usr_filter_placeholder: "Name or department",
    usr_count: "{n} users",
    usr_none: "No users match.",
    usr_manage: "Manage",
    usr_manage_label: "Manage {name}",
    usr_manage_title: "Manage “{name}”",
    usr_details: "Details",
    usr_account: "Account and sign-in",
    usr_created: "User {name} created. They must change the password at first sign-in.",
    usr_saved: "Changes to {name} saved.",
    usr_reset: "Reset password…",
    usr_reset_submit: "Reset password",
    usr_reset_title: "Reset the password of “{name}”",
    usr_reset_note: "This ends all of the user's sign-ins and lifts a lockout. They must choose a new password at their next sign-in.",
    usr_reset_done: "Password of {name} reset; all their sign-ins were ended.",
    usr_reset_desc: "Set a temporary password (also ends their sign-ins).",
    usr_unlock: "Unlock",
    usr_unlock_desc: "Lift the lockout after too many failed sign-ins.",
    usr_unlocked: "{name} can sign in again.",
    usr_logout_all: "Sign out everywhere",
    usr_logout_all_desc: "End every sign-in of this user (a lost laptop or phone).",
    usr_logout_all_confirm: "End every sign-in of {name}? They will have to sign in again on every device.",
    usr_logged_out: "All sign-ins of {name} were ended.",
    usr_disable: "Disable account",
    usr_disable_desc: "They are signed out at once and can no longer sign in. Nothing is deleted.",
    usr_disable_confirm: "Disable {name}? They are signed out at once and can no longer sign in.",
    usr_disabled_done: "{name} is disabled.",
    usr_enable: "Enable account",
    usr_enable_desc: "Allow this user to sign in again.",
    usr_enabled_done: "{name} can sign in again.",
    usr_external: "Signs in through {source}: the password is managed there.",
    usr_self_note: "This is your own account.",
  },
  zh: {
    usr_title: "用户",
    usr_new: "新建用户",
    usr_create_title: "新建用户",
    usr_username: "用户名",
    usr_username_hint: "用于登录：1–150 个字符，不含空格。创建后不能修改。",
    usr_display_name: "显示名称",
    usr_role: "角色",
    usr_role_admin: "系统管理员",
    usr_role_librarian: "知识库管理员",
    usr_role_staff: "普通员工",
    usr_role_hint_admin: "系统管理员：拥有全部权限，包括用户管理和审计日志。",
    usr_role_hint_librarian: "知识库管理员：管理被授予“可管理”权限的知识库。",
    usr_role_hint_staff: "普通员工：在本人或所在部门被授权的知识库中阅读和提问。",
    usr_temp_password: "临时密码",
    usr_temp_password_hint: "至少 12 个字符，不能与用户名相同，也不能是常见密码。用户首次登录时必须修改密码——请安全地转交此密码。",
    usr_departments: "部门",
    usr_status: "状态",
    usr_active: "正常",
    usr_disabled: "已停用",
    usr_must_change: "需修改密码",
    usr_last_login: "最近登录",
    usr_you: "本人",
    usr_filter: "筛选用户",
    usr_filter_placeholder: "姓名或部门",
    usr_count: "共 {n} 个用户",
    usr_none: "没有符合条件的用户。",
    usr_manage: "管理",
    usr_manage_label: "管理 {name}",
    usr_manage_title: "管理“{name}”",
    usr_details: "基本信息",
    usr_account: "账户与登录",
    usr_created: "已创建用户 {name}，其首次登录时必须修改密码。",
    usr_saved: "已保存对 {name} 的修改。",
    usr_reset: "重置密码…",
    usr_reset_submit: "重置密码",
    usr_reset_title: "重置“{name}”的密码",
    usr_reset_note: "此操作会结束该用户的所有登录并解除锁定。用户下次登录时必须设置新密码。",
    usr_reset_done: "已重置 {name} 的密码，并结束其所有登录。",
    usr_reset_desc: "设置临时密码（同时结束其所有登录）。",
    usr_unlock: "解除锁定",
    usr_unlock_desc: "解除因多次登录失败造成的锁定。",
    usr_unlocked: "{name} 已可重新登录。",
    usr_logout_all: "在所有设备上退出",
    usr_logout_all_desc: "结束该用户的所有登录（如电脑或手机丢失）。",
    usr_logout_all_confirm: "结束 {name} 的所有登录？其需要在每台设备上重新登录。",
    usr_logged_out: "已结束 {name} 的所有登录。",
    usr_disable: "停用账户",
    usr_disable_desc: "立即退出登录且无法再登录。不会删除任何内容。",
    usr_disable_confirm: "停用 {name}？其将立即退出登录且无法再登录。",
    usr_disabled_done: "已停用 {name}。",
    usr_enable: "启用账户",
    usr_enable_desc: "允许该用户重新登录。",
    usr_enabled_done: "{name} 已可重新登录。",
    usr_external: "通过 {source} 登录：密码在该系统中管理。",
    usr_self_note: "这是您本人的账户。",
  },
});

const ROLES = ["admin", "librarian", "staff"];
const ROLE_BADGE = { admin: "info", librarian: "ok", staff: "neutral" };

function roleLabel(role) {
  return ROLES.includes(role) ? t(`usr_role_${role}`) : role;
}

function roleSelect(value) {
  const select = h("select", { required: true }, ROLES.map((r) => h("option", { value: r, selected: r === value }, roleLabel(r))));
  const hint = h("small", { class: "hint", "aria-live": "polite" });
  const sync = () => {
    hint.textContent = t(`usr_role_hint_${select.value}`);
  };
  select.addEventListener("change", sync);
  sync();
  return { select, hint };
}

function roleField(value) {
  const { select, hint } = roleSelect(value);
  const wrap = field(t("usr_role"), select);
  hint.id = `${select.id}-hint`;
  select.setAttribute("aria-describedby", hint.id);
  wrap.append(hint);
  return { select, wrap };
}

export async function render(main, _params, ctx) {
  const content = adminFrame(main, "users", ctx);
  if (refuseUnlessAdmin(content, ctx, t("usr_title"))) return;

  let users = [];
  const list = h("div", { class: "adm-list" });
  const count = h("p", { class: "muted small", "aria-live": "polite" });
  const filter = h("input", {
    type: "search",
    placeholder: t("usr_filter_placeholder"),
    autocomplete: "off",
    on: { input: () => showTable() },
  });
  const newBtn = h("button", { type: "button", class: "btn btn-primary", on: { click: () => createUser() } }, "＋ ", t("usr_new"));
  replace(
    content,
    pageHead(t("usr_title"), newBtn),
    h("div", { class: "form-inline" }, field(t("usr_filter"), filter)),
    count,
    list,
  );

  function statusCell(u) {
    return h(
      "span",
      { class: "stack-tight" },
      u.is_active ? badge(t("usr_active"), "ok") : badge(t("usr_disabled"), "danger"),
      u.must_change_password ? badge(t("usr_must_change"), "warn") : null,
      u.auth_source && u.auth_source !== "local" ? badge(u.auth_source, "neutral") : null,
    );
  }

  function showTable() {
    const q = filter.value.trim().toLowerCase();
    const rows = q
      ? users.filter((u) =>
          [u.username, u.display_name, ...(u.departments || [])].some((s) => String(s || "").toLowerCase().includes(q)),
        )
      : users;
    count.textContent = t("usr_count", { n: rows.length });
    replace(
      list,
      cardTable(
        [
          [t("usr_username"), (u) => h("span", {}, h("strong", {}, u.username), u.id === ctx.me.id ? [" ", badge(t("usr_you"), "info")] : null)],
          [t("usr_display_name"), (u) => u.display_name || "–", { wrap: true }],
          [t("usr_role"), (u) => badge(roleLabel(u.role), ROLE_BADGE[u.role] || "neutral")],
          [t("usr_departments"), (u) => (u.departments && u.departments.length ? u.departments.join(", ") : "–"), { wrap: true }],
          [t("usr_status"), statusCell],
          [t("usr_last_login"), (u) => (u.last_login_at ? formatTime(u.last_login_at, locale()) : t("ak_never"))],
          [
            t("actions"),
            (u) =>
              h(
                "button",
                {
                  type: "button",
                  class: "btn btn-small",
                  dataset: { userId: String(u.id) },
                  "aria-label": t("usr_manage_label", { name: u.username }),
                  on: { click: () => manageUser(u) },
                },
                t("usr_manage"),
              ),
          ],
        ],
        rows,
        { caption: t("usr_title"), empty: t("usr_none"), rowClass: (u) => (u.is_active ? null : "row-dim") },
      ),
    );
  }

  async function reload(focusUserId) {
    if (!users.length) replace(list, spinner());
    try {
      users = await get("/users");
      showTable();
      if (focusUserId !== undefined) {
        const again = list.querySelector(`button[data-user-id="${focusUserId}"]`);
        if (again) again.focus();
      }
    } catch (err) {
      replace(list, errorBox(err, t("retry"), () => reload()));
    }
  }

  async function createUser() {
    const username = h("input", { required: true, maxlength: 150, autocomplete: "off", autocapitalize: "off", spellcheck: "false", autofocus: true, pattern: "\\S+" });
    const displayName = h("input", { maxlength: 200, autocomplete: "off" });
    const role = roleField("staff");
    const pw = passwordInput();
    const created = await formDialog(
      t("usr_create_title"),
      () => [
        field(t("usr_username"), username, t("usr_username_hint")),
        field(t("usr_display_name"), displayName),
        role.wrap,
        fieldFor(t("usr_temp_password"), pw.input, pw.row, t("usr_temp_password_hint")),
      ],
      async () => {
        const name = username.value.trim();
        if (!name || /\s/.test(name)) throw invalid(t("usr_username_hint"));
        return post("/users", {
          username: name,
          display_name: displayName.value.trim(),
          role: role.select.value,
          password: pw.input.value,
          must_change_password: true,
        });
      },
      { submitLabel: t("create") },
    );
    if (created && created.username) {
      notify(t("usr_created", { name: created.username }));
      reload(created.id);
    }
  }

  async function manageUser(u) {
    const name = u.username;
    const self = u.id === ctx.me.id;
    let changed = false;
    await openDialog(t("usr_manage_title", { name }), (close) => {
      const displayName = h("input", { maxlength: 200, value: u.display_name || "", autocomplete: "off" });
      const role = roleField(u.role);
      const message = h("div", { class: "form-message", "aria-live": "assertive" });
      const save = h("button", { type: "submit", class: "btn btn-primary" }, t("save"));
      const details = h(
        "form",
        {
          class: "adm-form",
          on: {
            submit: (e) => {
              e.preventDefault();
              replace(message);
              const body = {};
              if (displayName.value.trim() !== (u.display_name || "")) body.display_name = displayName.value.trim();
              if (role.select.value !== u.role) body.role = role.select.value;
              if (!Object.keys(body).length) {
                close();
                return;
              }
              busy(save, async () => {
                try {
                  await patch(`/users/${u.id}`, body);
                  notify(t("usr_saved", { name }));
                  changed = true;
                  close();
                } catch (err) {
                  replace(message, errorBox(err));
                }
              });
            },
          },
        },
        h("h3", {}, t("usr_details")),
        self ? h("p", { class: "muted small" }, t("usr_self_note")) : null,
        field(t("usr_display_name"), displayName),
        role.wrap,
        message,
        h("div", { class: "row" }, save),
      );

      const actionMessage = h("div", { class: "form-message", "aria-live": "assertive" });
      const action = (label, desc, kind, run) => {
        const btn = h("button", { type: "button", class: ["btn", "btn-small", kind === "danger" && "btn-danger"] }, label);
        btn.addEventListener("click", () =>
          busy(btn, async () => {
            replace(actionMessage);
            try {
              if (await run()) {
                changed = true;
                close();
              }
            } catch (err) {
              replace(actionMessage, errorBox(err));
            }
          }),
        );
        return h("li", { class: "adm-action" }, btn, h("span", { class: "muted small" }, desc));
      };

      const local = !u.auth_source || u.auth_source === "local";
      const actions = h(
        "ul",
        { class: "adm-actions" },
        local
          ? action(t("usr_reset"), t("usr_reset_desc"), null, () => resetPassword(u))
          : h("li", { class: "muted small" }, t("usr_external", { source: u.auth_source })),
        action(t("usr_unlock"), t("usr_unlock_desc"), null, async () => {
          await post(`/users/${u.id}/unlock`);
          notify(t("usr_unlocked", { name }));
          return true;
        }),
        action(t("usr_logout_all"), t("usr_logout_all_desc"), null, async () => {
          if (!(await confirmDialog(t("usr_logout_all_confirm", { name }), t("usr_logout_all")))) return false;
          await post(`/users/${u.id}/logout`);
          notify(t("usr_logged_out", { name }));
          return true;
        }),
        u.is_active
          ? action(t("usr_disable"), t("usr_disable_desc"), "danger", async () => {
              if (!(await confirmDialog(t("usr_disable_confirm", { name }), t("usr_disable")))) return false;
              await patch(`/users/${u.id}`, { is_active: false });
              notify(t("usr_disabled_done", { name }));
              return true;
            })
          : action(t("usr_enable"), t("usr_enable_desc"), null, async () => {
              await patch(`/users/${u.id}`, { is_active: true });
              notify(t("usr_enabled_done", { name }));
              return true;
            }),
      );
      return h("div", { class: "stack" }, details, h("hr", { class: "adm-sep" }), h("h3", {}, t("usr_account")), actionMessage, actions);
    });
    if (changed) reload(u.id);
    else list.querySelector(`button[data-user-id="${u.id}"]`)?.focus();
  }

  async function resetPassword(u) {
    const pw = passwordInput();
    const done = await formDialog(
      t("usr_reset_title", { name: u.username }),
      () => [h("p", { class: "callout" }, t("usr_reset_note")), fieldFor(t("usr_temp_password"), pw.input, pw.row, t("usr_temp_password_hint"))],
      async () => {
        await post(`/users/${u.id}/password`, { password: pw.input.value, must_change_password: true });
        return true;
      },
      { submitLabel: t("usr_reset_submit") },
    );
    if (done) notify(t("usr_reset_done", { name: u.username }));
    return Boolean(done);
  }

  await reload();
}
