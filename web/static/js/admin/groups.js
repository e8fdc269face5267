// Departments (administrators only): the department tree, creating, renaming, moving and
// deleting departments, and their members.

import { del, get, patch, post } from "../api.js";
import { field, h, replace } from "../dom.js";
import { addStrings, t } from "../i18n.js";
import { badge, busy, confirmDialog, errorBox, notify, spinner } from "../ui.js";
import { adminFrame } from "./shell.js";
import { formDialog, pageHead, refuseUnlessAdmin } from "./kit.js";

addStrings({
  en: {
    grp_title: "Departments",
    grp_new: "New department",
    grp_tree: "Department tree",
    grp_none: "No departments yet. Create one, then add its members; grants to a department reach its sub-departments' members too.",
    grp_name: "Name",
    grp_parent: "Parent department",
    grp_top: "— Top level —",
    grp_parent_hint: "Grants to a department also reach the members of its sub-departments.",
    grp_members_n: "{n} members",
    grp_path: "Path",
    grp_edit: "Rename or move",
    grp_edit_title: "Rename or move “{name}”",
    grp_delete_confirm: "Delete the department “{name}”? Its memberships and library grants are removed; its sub-departments move up a level. This cannot be undone.",
    grp_deleted: "Department “{name}” deleted.",
    grp_created: "Department “{name}” created.",
    grp_saved: "Department “{name}” saved.",
    grp_members: "Members",
    grp_no_members: "No members yet.",
    grp_add_member: "Add a member",
    grp_pick_user: "Choose a user…",
    grp_all_members: "Every user is already a member.",
    grp_remove: "Remove",
    grp_remove_label: "Remove {user} from {group}",
    grp_remove_confirm: "Remove {user} from “{group}”? They lose the access this department gives them.",
    grp_added: "{user} added to “{group}”.",
    grp_removed: "{user} removed from “{group}”.",
    grp_select: "Choose a department in the tree to see and change its members.",
    grp_disabled_user: "disabled",
    grp_subdepts: "Sub-departments",
    grp_select_label: "{name}, {n} members",
  },
  zh: {
    grp_title: "部门",
    grp_new: "新建部门",
    grp_tree: "部门结构",
    grp_none: "还没有部门。先创建部门，再添加成员；授予部门的权限同样适用于其下级部门的成员。",
    grp_name: "名称",
    grp_parent: "上级部门",
    grp_top: "— 顶级 —",
    grp_parent_hint: "授予部门的权限同样适用于其下级部门的成员。",
    grp_members_n: "{n} 名成员",
    grp_path: "路径",
    grp_edit: "重命名或移动",
    grp_edit_title: "重命名或移动“{name}”",
    grp_delete_confirm: "删除部门“{name}”？其成员关系和知识库授权将被删除，下级部门上移一级。此操作无法撤销。",
    grp_deleted: "已删除部门“{name}”。",
    grp_created: "已创建部门“{name}”。",
    grp_saved: "已保存部门“{name}”。",
    grp_members: "成员",
    grp_no_members: "还没有成员。",
    grp_add_member: "添加成员",
    grp_pick_user: "选择用户…",
    grp_all_members: "所有用户都已是成员。",
    grp_remove: "移除",
    grp_remove_label: "将 {user} 移出 {group}",
    grp_remove_confirm: "将 {user} 移出“{group}”？其将失去该部门带来的访问权限。",
    grp_added: "已将 {user} 加入“{group}”。",
    grp_removed: "已将 {user} 移出“{group}”。",
    grp_select: "在左侧选择一个部门，查看和修改其成员。",
    grp_disabled_user: "已停用",
    grp_subdepts: "下级部门",
    grp_select_label: "{name}，{n} 名成员",
  },
});

/** Departments in tree order: [{group, depth}], children sorted by name. */
function flatten(groups) {
  const ids = new Set(groups.map((g) => g.id));
  const children = new Map();
  for (const g of groups) {
    const parent = g.parent_id !== null && ids.has(g.parent_id) ? g.parent_id : null;
    if (!children.has(parent)) children.set(parent, []);
    children.get(parent).push(g);
  }
  for (const list of children.values()) list.sort((a, b) => a.name.localeCompare(b.name));
  const out = [];
  const seen = new Set();
  const walk = (parent, depth) => {
    for (const g of children.get(parent) || []) {
      if (seen.has(g.id)) continue; // a cycle would be a server bug; never loop on it
      seen.add(g.id);
      out.push({ group: g, depth });
      walk(g.id, depth + 1);
    }
  };
  walk(null, 0);
  return { out, children };
}

function descendants(children, id) {
  const found = new Set();
  const stack = [id];
  while (stack.length) {
    const next = stack.pop();
    for (const c of children.get(next) || []) {
      if (!found.has(c.id)) {
        found.add(c.id);
        stack.push(c.id);
      }
    }
  }
  return found;
}

export async function render(main, _params, ctx) {
  const content = adminFrame(main, "groups", ctx);
  if (refuseUnlessAdmin(content, ctx, t("grp_title"))) return;

  const state = { groups: [], users: [], selected: null, tree: { out: [], children: new Map() } };
  const treeBox = h("nav", { class: "grp-tree card", "aria-label": t("grp_tree") });
  const detail = h("section", { class: "grp-detail card", "aria-label": t("grp_members") });
  const body = h("div", { class: "grp-layout" }, treeBox, detail);
  const newBtn = h("button", { type: "button", class: "btn btn-primary", on: { click: () => createGroup() } }, "＋ ", t("grp_new"));
  replace(content, pageHead(t("grp_title"), newBtn), body);

  const byId = (id) => state.groups.find((g) => g.id === id);
  const userById = (id) => state.users.find((u) => u.id === id);
  const userText = (u) => (u.display_name && u.display_name !== u.username ? `${u.username} (${u.display_name})` : u.username);

  function pathOf(g) {
    const names = [];
    const seen = new Set();
    let cur = g;
    while (cur && !seen.has(cur.id)) {
      seen.add(cur.id);
      names.unshift(cur.name);
      cur = cur.parent_id !== null ? byId(cur.parent_id) : null;
    }
    return names.join(" › ");
  }

  function parentOptions(selectedParent, exclude = new Set()) {
    return [
      h("option", { value: "", selected: selectedParent === null }, t("grp_top")),
      state.tree.out
        .filter(({ group }) => !exclude.has(group.id))
        .map(({ group, depth }) =>
          h("option", { value: String(group.id), selected: group.id === selectedParent }, `${"\u00a0\u00a0\u00a0".repeat(depth)}${depth ? "└ " : ""}${group.name}`),
        ),
    ];
  }

  function renderTree() {
    if (!state.groups.length) {
      replace(treeBox, h("p", { class: "muted" }, t("grp_none")));
      return;
    }
    const build = (parent) => {
      const kids = state.tree.children.get(parent) || [];
      if (!kids.length) return null;
      return h(
        "ul",
        { class: "tree" },
        kids.map((g) =>
          h(
            "li",
            {},
            h(
              "button",
              {
                type: "button",
                class: "tree-item",
                dataset: { groupId: String(g.id) },
                "aria-current": g.id === state.selected ? "true" : null,
                "aria-label": t("grp_select_label", { name: g.name, n: g.member_ids.length }),
                on: { click: () => select(g.id), keydown: treeKeys },
              },
              h("span", { class: "tree-name" }, g.name),
              h("span", { class: "tree-count", "aria-hidden": "true" }, String(g.member_ids.length)),
            ),
            build(g.id),
          ),
        ),
      );
    };
    replace(treeBox, build(null));
  }

  /** Up / Down / Home / End move between the departments of the tree. */
  function treeKeys(e) {
    const buttons = Array.from(treeBox.querySelectorAll(".tree-item"));
    const i = buttons.indexOf(e.currentTarget);
    let next = null;
    if (e.key === "ArrowDown") next = buttons[i + 1];
    else if (e.key === "ArrowUp") next = buttons[i - 1];
    else if (e.key === "Home") next = buttons[0];
    else if (e.key === "End") next = buttons[buttons.length - 1];
    if (next) {
      e.preventDefault();
      next.focus();
    }
  }

  function select(id) {
    state.selected = id;
    for (const b of treeBox.querySelectorAll(".tree-item")) {
      if (Number(b.dataset.groupId) === id) b.setAttribute("aria-current", "true");
      else b.removeAttribute("aria-current");
    }
    renderDetail();
  }

  function renderDetail() {
    const g = state.selected !== null ? byId(state.selected) : null;
    if (!g) {
      replace(detail, h("p", { class: "muted" }, state.groups.length ? t("grp_select") : ""));
      detail.hidden = !state.groups.length;
      return;
    }
    detail.hidden = false;
    const members = g.member_ids.map((id) => userById(id) || { id, username: `#${id}`, display_name: "", is_active: true });
    members.sort((a, b) => a.username.localeCompare(b.username));
    const memberSet = new Set(g.member_ids);
    const candidates = state.users.filter((u) => !memberSet.has(u.id)).sort((a, b) => a.username.localeCompare(b.username));
    const pick = h(
      "select",
      { required: true },
      h("option", { value: "" }, t("grp_pick_user")),
      candidates.map((u) => h("option", { value: String(u.id) }, userText(u) + (u.is_active ? "" : ` — ${t("grp_disabled_user")}`))),
    );
    const addBtn = h("button", { type: "submit", class: "btn" }, t("add"));
    const addForm = candidates.length
      ? h(
          "form",
          {
            class: "form-inline grp-add",
            on: {
              submit: (e) => {
                e.preventDefault();
                const userId = Number(pick.value);
                if (!userId) {
                  pick.focus();
                  return;
                }
                busy(addBtn, async () => {
                  await post(`/groups/${g.id}/members`, { user_id: userId });
                  notify(t("grp_added", { user: userById(userId)?.username || userId, group: g.name }));
                  await reload(g.id, "add");
                });
              },
            },
          },
          field(t("grp_add_member"), pick),
          addBtn,
        )
      : h("p", { class: "muted small" }, t("grp_all_members"));
    const subs = state.tree.children.get(g.id) || [];
    const heading = h("h2", { tabindex: "-1", class: "grp-heading" }, g.name);
    replace(
      detail,
      h(
        "div",
        { class: "row-between" },
        heading,
        h(
          "div",
          { class: "row" },
          h("button", { type: "button", class: "btn btn-small", on: { click: () => editGroup(g) } }, t("grp_edit")),
          h("button", { type: "button", class: "btn btn-small btn-danger", on: { click: (e) => deleteGroup(g, e.currentTarget) } }, t("delete")),
        ),
      ),
      h(
        "dl",
        { class: "kv small" },
        h("dt", {}, t("grp_path")),
        h("dd", {}, pathOf(g)),
        h("dt", {}, t("grp_subdepts")),
        h("dd", {}, subs.length ? subs.map((s) => s.name).join(", ") : "–"),
      ),
      h("h3", { class: "grp-members-title" }, t("grp_members"), " ", badge(String(members.length), "neutral")),
      addForm,
      members.length
        ? h(
            "ul",
            { class: "member-list" },
            members.map((u) =>
              h(
                "li",
                { class: "member" },
                h(
                  "span",
                  { class: "member-name" },
                  h("strong", {}, u.username),
                  u.display_name && u.display_name !== u.username ? h("span", { class: "muted" }, ` ${u.display_name}`) : null,
                  u.is_active === false ? [" ", badge(t("grp_disabled_user"), "danger")] : null,
                ),
                h(
                  "button",
                  {
                    type: "button",
                    class: "btn btn-small",
                    "aria-label": t("grp_remove_label", { user: u.username, group: g.name }),
                    on: { click: (e) => removeMember(g, u, e.currentTarget) },
                  },
                  t("grp_remove"),
                ),
              ),
            ),
          )
        : h("p", { class: "muted" }, t("grp_no_members")),
    );
  }

  async function reload(selectId = state.selected, focus = null) {
    if (!state.groups.length) replace(treeBox, spinner());
    try {
      const [groups, users] = await Promise.all([get("/groups"), get("/users")]);
      state.groups = groups;
      state.users = users;
      state.tree = flatten(groups);
    } catch (err) {
      replace(treeBox, errorBox(err, t("retry"), () => reload(selectId, focus)));
      detail.hidden = true;
      return;
    }
    state.selected = selectId !== null && byId(selectId) ? selectId : state.tree.out[0]?.group.id ?? null;
    renderTree();
    renderDetail();
    if (focus === "heading") detail.querySelector(".grp-heading")?.focus();
    else if (focus === "add") (detail.querySelector("form select") || detail.querySelector(".grp-heading"))?.focus();
    else if (focus === "tree") (treeBox.querySelector('.tree-item[aria-current="true"]') || newBtn).focus();
  }

  async function createGroup() {
    const name = h("input", { required: true, maxlength: 200, autocomplete: "off", autofocus: true });
    const parent = h("select", {}, parentOptions(state.selected));
    const created = await formDialog(
      t("grp_new"),
      () => [field(t("grp_name"), name), field(t("grp_parent"), parent, t("grp_parent_hint"))],
      () => post("/groups", { name: name.value.trim(), parent_id: parent.value ? Number(parent.value) : null }),
      { submitLabel: t("create") },
    );
    if (created && created.id) {
      notify(t("grp_created", { name: created.name }));
      await reload(created.id, "heading");
    }
  }

  async function editGroup(g) {
    const name = h("input", { required: true, maxlength: 200, value: g.name, autocomplete: "off", autofocus: true });
    const exclude = descendants(state.tree.children, g.id);
    exclude.add(g.id);
    const parent = h("select", {}, parentOptions(g.parent_id, exclude));
    // PATCH sets the parent every time (null = top level): always send the chosen one.
    const saved = await formDialog(
      t("grp_edit_title", { name: g.name }),
      () => [field(t("grp_name"), name), field(t("grp_parent"), parent, t("grp_parent_hint"))],
      () => patch(`/groups/${g.id}`, { name: name.value.trim(), parent_id: parent.value ? Number(parent.value) : null }),
    );
    if (saved && saved.id) {
      notify(t("grp_saved", { name: saved.name }));
      await reload(g.id, "heading");
    }
  }

  async function deleteGroup(g, button) {
    if (!(await confirmDialog(t("grp_delete_confirm", { name: g.name })))) return;
    await busy(button, async () => {
      await del(`/groups/${g.id}`);
      notify(t("grp_deleted", { name: g.name }));
      await reload(g.parent_id, "tree");
    });
  }

  async function removeMember(g, u, button) {
    if (!(await confirmDialog(t("grp_remove_confirm", { user: u.username, group: g.name }), t("grp_remove")))) return;
    await busy(button, async () => {
      await del(`/groups/${g.id}/members/${u.id}`);
      notify(t("grp_removed", { user: u.username, group: g.name }));
      await reload(g.id, "heading");
    });
  }

  await reload(null);
}
