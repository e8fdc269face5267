// Libraries: the list (with document counts and your permission) and, for admins, creating one.

import { post, get } from "../api.js";
import { field, h, replace } from "../dom.js";
import { addStrings, t } from "../i18n.js";
import { badge, busy, errorBox, load } from "../ui.js";
import { adminFrame, dataTable } from "./shell.js";

addStrings({
  en: {
    lib_title: "Libraries",
    lib_new: "New library",
    lib_name: "Library name",
    lib_description: "What it holds (optional)",
    lib_documents: "Documents",
    lib_ready: "{ready} ready of {total}",
    lib_failed: "{n} failed",
    lib_active: "{n} in progress",
    lib_permission: "Your permission",
    perm_read: "read",
    perm_write: "write",
    perm_manage: "manage",
    lib_none: "No libraries yet.",
  },
  zh: {
    lib_title: "知识库",
    lib_new: "新建知识库",
    lib_name: "知识库名称",
    lib_description: "内容说明（可选）",
    lib_documents: "文档",
    lib_ready: "{ready}/{total} 已就绪",
    lib_failed: "{n} 个失败",
    lib_active: "{n} 个处理中",
    lib_permission: "您的权限",
    perm_read: "只读",
    perm_write: "可上传",
    perm_manage: "可管理",
    lib_none: "还没有知识库。",
  },
});

const ACTIVE = ["queued", "parsing", "embedding", "indexing"];

export function docSummary(counts) {
  const total = Object.entries(counts || {}).filter(([s]) => s !== "deleted").reduce((a, [, n]) => a + n, 0);
  const active = ACTIVE.reduce((a, s) => a + (counts?.[s] || 0), 0);
  return h(
    "span",
    { class: "row" },
    t("lib_ready", { ready: counts?.ready || 0, total }),
    active ? badge(t("lib_active", { n: active }), "info") : null,
    counts?.failed ? badge(t("lib_failed", { n: counts.failed }), "danger") : null,
  );
}

export async function render(main, _params, ctx) {
  const content = adminFrame(main, "libraries", ctx);
  const list = h("div");
  const name = h("input", { required: true, maxlength: 200 });
  const description = h("input", { maxlength: 5000 });
  const message = h("div", { class: "form-message" });
  const submit = h("button", { type: "submit", class: "btn btn-primary" }, t("create"));
  const form = ctx.isAdmin
    ? h(
        "form",
        {
          class: "card",
          on: {
            submit: (e) => {
              e.preventDefault();
              replace(message);
              busy(submit, async () => {
                try {
                  const lib = await post("/libraries", { name: name.value.trim(), description: description.value.trim() });
                  ctx.navigate(`#/admin/libraries/${lib.id}`);
                } catch (err) {
                  replace(message, errorBox(err));
                }
              });
            },
          },
        },
        h("h2", {}, t("lib_new")),
        h("div", { class: "form-inline" }, field(t("lib_name"), name), field(t("lib_description"), description), submit),
        message,
      )
    : null;
  replace(content, h("h1", {}, t("lib_title")), form, list);
  await load(list, () => get("/libraries"), (libs) =>
    dataTable(
      [
        [t("name"), (l) => h("a", { href: `#/admin/libraries/${l.id}` }, l.name)],
        [t("description"), (l) => l.description, { wrap: true }],
        [t("lib_documents"), (l) => docSummary(l.documents)],
        [t("lib_permission"), (l) => t(`perm_${l.permission}`)],
      ],
      libs,
      { empty: t("lib_none") },
    ),
  );
}
