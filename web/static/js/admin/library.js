// One library: its documents (upload with per-file progress, search, status filter, chunk
// viewer, re-ingest, delete), who may use it (grants, folder/document grants) and its settings.

import { del, get, patch, post, upload } from "../api.js";
import { field, formatBytes, formatTime, h, replace } from "../dom.js";
import { addStrings, locale, t } from "../i18n.js";
import { badge, busy, confirmDialog, errorBox, errorText, load, notify, notifyError, openDialog, spinner } from "../ui.js";
import { adminFrame, dataTable } from "./shell.js";
import { docSummary } from "./libraries.js";

addStrings({
  en: {
    tab_documents: "Documents",
    tab_access: "Access",
    tab_settings: "Settings",
    drop_title: "Drop files, folders or .zip archives here",
    drop_hint: "PDF, Word, PowerPoint, Excel, HTML, e-mail, Markdown, text; folders keep their structure.",
    choose_files: "Choose files",
    choose_folder: "Choose a folder",
    uploads: "Uploads",
    clear_finished: "Clear finished",
    st_uploading: "Uploading",
    st_queued: "Waiting",
    st_parsing: "Reading the document",
    st_embedding: "Embedding",
    st_indexing: "Indexing",
    st_ready: "Ready",
    st_failed: "Failed",
    st_deleted: "Deleted",
    st_duplicate: "Already in the library",
    st_rejected: "Refused",
    st_unpacked: "Unpacked",
    filter_status: "Status",
    filter_q: "Search title, file name or folder",
    doc_title: "Document",
    doc_pages: "Pages",
    doc_chunks: "Passages",
    doc_size: "Size",
    doc_updated: "Updated",
    doc_view_chunks: "Passages",
    doc_reingest: "Re-ingest",
    doc_reingest_done: "Queued again: {name}",
    doc_deleted: "Deleted: {name}",
    doc_none: "No documents match.",
    doc_total: "{n} documents",
    doc_warnings: "Notes from parsing",
    chunks_of: "Passages of {name}",
    chunk_meta: "#{n} · {kind} · {tokens} tokens",
    grants: "Who may use this library",
    grant_add: "Give access",
    grantee_kind: "To",
    grantee_user: "A user",
    grantee_group: "A department",
    grantee: "Who",
    permission: "Permission",
    perm_read_help: "read: ask and search",
    perm_write_help: "write: also upload and delete documents",
    perm_manage_help: "manage: also give access and create API keys",
    grant_revoke: "Revoke",
    grant_revoked: "Access revoked.",
    scoped: "Restricted folders and documents",
    scoped_help: "A restricted folder or document is readable only by the people named here and by the library's managers — even people who may read the rest of the library do not see it.",
    scoped_target: "Folder or document",
    scoped_folder: "Folder: {name}",
    scoped_document: "Document: {name}",
    scoped_add: "Restrict",
    no_folders: "This library has no folders.",
    settings_title: "Library settings",
    allow_download: "Readers may download original files",
    allow_download_help: "Managers can always download. Readers can always see cited passages and page images.",
    delete_library: "Delete this library",
    delete_library_help: "Deletes every document, passage and index of the library. This cannot be undone.",
    delete_library_confirm: "Type the library's name to confirm",
    library_deleted: "Library deleted.",
    read_only_note: "You may read this library; uploading needs write permission.",
    folders: "Folders",
  },
  zh: {
    tab_documents: "文档",
    tab_access: "访问权限",
    tab_settings: "设置",
    drop_title: "将文件、文件夹或 .zip 压缩包拖放到这里",
    drop_hint: "支持 PDF、Word、PowerPoint、Excel、HTML、邮件、Markdown、文本；文件夹会保留目录结构。",
    choose_files: "选择文件",
    choose_folder: "选择文件夹",
    uploads: "上传",
    clear_finished: "清除已完成",
    st_uploading: "上传中",
    st_queued: "排队中",
    st_parsing: "解析中",
    st_embedding: "向量化",
    st_indexing: "建立索引",
    st_ready: "已就绪",
    st_failed: "失败",
    st_deleted: "已删除",
    st_duplicate: "知识库中已存在",
    st_rejected: "已拒绝",
    st_unpacked: "已解压",
    filter_status: "状态",
    filter_q: "搜索标题、文件名或文件夹",
    doc_title: "文档",
    doc_pages: "页数",
    doc_chunks: "段落数",
    doc_size: "大小",
    doc_updated: "更新时间",
    doc_view_chunks: "查看分段",
    doc_reingest: "重新处理",
    doc_reingest_done: "已重新排队：{name}",
    doc_deleted: "已删除：{name}",
    doc_none: "没有符合条件的文档。",
    doc_total: "共 {n} 个文档",
    doc_warnings: "解析提示",
    chunks_of: "《{name}》的分段",
    chunk_meta: "#{n} · {kind} · {tokens} 个词元",
    grants: "谁可以使用此知识库",
    grant_add: "授权",
    grantee_kind: "授权给",
    grantee_user: "用户",
    grantee_group: "部门",
    grantee: "对象",
    permission: "权限",
    perm_read_help: "只读：提问和检索",
    perm_write_help: "可上传：还可上传和删除文档",
    perm_manage_help: "可管理：还可授权和创建 API 密钥",
    grant_revoke: "撤销",
    grant_revoked: "已撤销授权。",
    scoped: "受限的文件夹和文档",
    scoped_help: "受限的文件夹或文档只有此处列出的人员和知识库管理员可以阅读——即使能阅读知识库其余内容的人也看不到。",
    scoped_target: "文件夹或文档",
    scoped_folder: "文件夹：{name}",
    scoped_document: "文档：{name}",
    scoped_add: "设为受限",
    no_folders: "此知识库没有文件夹。",
    settings_title: "知识库设置",
    allow_download: "允许读者下载原文件",
    allow_download_help: "管理员始终可以下载。读者始终可以查看被引用的段落和页面图像。",
    delete_library: "删除此知识库",
    delete_library_help: "将删除知识库中的所有文档、段落和索引，且无法撤销。",
    delete_library_confirm: "输入知识库名称以确认",
    library_deleted: "知识库已删除。",
    read_only_note: "您可以阅读此知识库；上传需要“可上传”权限。",
    folders: "文件夹",
  },
});

const ACTIVE = new Set(["queued", "parsing", "embedding", "indexing"]);
const STATUSES = ["queued", "parsing", "embedding", "indexing", "ready", "failed"];
const POLL_MS = 2500;
const BATCH_FILES = 20;
const BATCH_BYTES = 48 * 1024 * 1024;
const PAGE = 50;
const RANK = { read: 1, write: 2, manage: 3 };

function statusBadge(status) {
  const kind = status === "ready" || status === "unpacked" ? "ok" : status === "failed" || status === "rejected" ? "danger" : status === "duplicate" ? "warn" : "info";
  return badge(t(`st_${status}`), kind);
}

function progressBar(fraction, state) {
  const bar = h("span");
  bar.style.width = `${Math.round(Math.max(0, Math.min(1, fraction)) * 100)}%`;
  return h("div", { class: ["progress", state], role: "progressbar", "aria-valuemin": "0", "aria-valuemax": "100", "aria-valuenow": String(Math.round(fraction * 100)) }, bar);
}

/** Files of a drop: folders are walked (paths kept); must start inside the drop handler. */
async function droppedFiles(dataTransfer) {
  const entries = [...dataTransfer.items].map((i) => (i.webkitGetAsEntry ? i.webkitGetAsEntry() : null));
  if (!entries.some(Boolean)) return [...dataTransfer.files].map((file) => ({ file, path: file.name }));
  const out = [];
  const walk = async (entry, prefix) => {
    if (!entry || entry.name.startsWith(".")) return;
    if (entry.isFile) {
      const file = await new Promise((resolve, reject) => entry.file(resolve, reject));
      out.push({ file, path: prefix + file.name });
    } else if (entry.isDirectory) {
      const reader = entry.createReader();
      for (;;) {
        const batch = await new Promise((resolve, reject) => reader.readEntries(resolve, reject));
        if (!batch.length) break;
        for (const child of batch) await walk(child, `${prefix}${entry.name}/`);
      }
    }
  };
  for (const entry of entries) await walk(entry, "");
  return out;
}

function batches(items) {
  const out = [];
  let current = [];
  let size = 0;
  for (const item of items) {
    if (current.length && (current.length >= BATCH_FILES || size + item.file.size > BATCH_BYTES)) {
      out.push(current);
      current = [];
      size = 0;
    }
    current.push(item);
    size += item.file.size;
  }
  if (current.length) out.push(current);
  return out;
}

export async function render(main, { libraryId, tab }, ctx) {
  const content = adminFrame(main, "libraries", ctx);
  replace(content, spinner());
  let lib;
  try {
    lib = await get(`/libraries/${libraryId}`);
  } catch (err) {
    replace(content, errorBox(err));
    return null;
  }
  const rank = RANK[lib.permission] || 0;
  const tabs = [["documents", "tab_documents"]];
  if (rank >= RANK.manage) tabs.push(["access", "tab_access"], ["settings", "tab_settings"]);
  if (!tabs.some(([k]) => k === tab)) tab = "documents";
  const body = h("div");
  const summary = h("div", {}, docSummary(lib.documents));
  /** Fresh document counts for the header (after uploads, deletes, re-ingests). */
  const recount = async () => {
    try {
      replace(summary, docSummary((await get(`/libraries/${lib.id}`)).documents));
    } catch {
      /* the counts stay as they were */
    }
  };
  replace(
    content,
    h("div", { class: "row-between" }, h("h1", {}, lib.name), summary),
    lib.description ? h("p", { class: "muted" }, lib.description) : null,
    h("nav", { class: "tabs", "aria-label": lib.name }, tabs.map(([k, label]) => h("a", { href: `#/admin/libraries/${lib.id}/${k}`, "aria-current": k === tab ? "page" : null }, t(label)))),
    body,
  );
  if (tab === "access") return accessTab(body, lib, ctx);
  if (tab === "settings") return settingsTab(body, lib, ctx);
  return documentsTab(body, lib, rank, recount);
}

// --- documents --------------------------------------------------------------------------------

function documentsTab(body, lib, rank, recount) {
  const canWrite = rank >= RANK.write;
  const uploads = new Map(); // key → upload row state
  let timer = null;
  let stopped = false;
  const uploadList = h("ul", { class: "upload-list", "aria-label": t("uploads") });
  const uploadHeader = h("div", { class: "row-between", hidden: true }, h("h2", {}, t("uploads")), h("button", { type: "button", class: "btn btn-small", on: { click: clearFinished } }, t("clear_finished")));
  const q = h("input", { type: "search", class: "search-input", placeholder: t("filter_q"), "aria-label": t("filter_q") });
  const status = h("select", { class: "status-select", "aria-label": t("filter_status") }, h("option", { value: "" }, t("all")), STATUSES.map((s) => h("option", { value: s }, t(`st_${s}`))));
  const table = h("div");
  const pager = h("div", { class: "pager" });
  let offset = 0;

  function row(item) {
    const stage = item.stage;
    const done = stage === "ready" || stage === "unpacked";
    const fraction = stage === "uploading" ? item.sent : done ? 1 : item.progress || 0;
    const state = stage === "failed" || stage === "rejected" ? "failed" : done || stage === "duplicate" ? "done" : "";
    const retry =
      stage === "failed" && item.documentId
        ? h("button", { type: "button", class: "btn btn-small", on: { click: (e) => busy(e.currentTarget, () => reingest(item.documentId, item.path)) } }, t("retry"))
        : null;
    const li = h(
      "li",
      { class: "upload-item", dataset: { status: stage } },
      h("div", { class: "upload-name", title: item.path }, item.path),
      h("div", {}, h("div", { class: "row small" }, statusBadge(stage), !done && fraction > 0 && fraction < 1 ? `${Math.round(fraction * 100)}%` : null), progressBar(fraction, state)),
      h("div", {}, retry),
      item.reason ? h("div", { class: "reason" }, item.reason) : null,
    );
    item.el.replaceWith(li);
    item.el = li;
  }

  function track(path) {
    const item = { path, stage: "uploading", sent: 0, el: h("li") };
    uploads.set(path, item);
    uploadList.append(item.el);
    uploadHeader.hidden = false;
    row(item);
    return item;
  }

  function clearFinished() {
    for (const [key, item] of uploads) {
      if (!ACTIVE.has(item.stage) && item.stage !== "uploading") {
        item.el.remove();
        uploads.delete(key);
      }
    }
    uploadHeader.hidden = uploads.size === 0;
  }

  async function send(files) {
    files = files.filter(({ file, path }) => !file.name.startsWith(".") && !path.split("/").some((p) => p.startsWith(".")));
    if (!files.length) return;
    for (const { path } of files) track(path);
    for (const batch of batches(files)) {
      const form = new FormData();
      for (const { file, path } of batch) form.append("files", file, path);
      const rows = batch.map(({ path }) => uploads.get(path));
      try {
        const report = await upload(`/libraries/${lib.id}/documents`, form, (f) => {
          for (const item of rows) item.sent = f;
          for (const item of rows) row(item);
        });
        for (const result of report.items) {
          // a file sent as it is, else a member of a zip archive: a row of its own
          const item =
            uploads.get(result.file) ||
            rows.find((r) => r.stage === "uploading" && r.path.endsWith(result.file)) ||
            track(result.file);
          item.documentId = result.document_id;
          item.reason = result.reason;
          item.stage = result.status;
          row(item);
        }
        for (const item of rows) {
          if (item.stage === "uploading") {
            // a zip archive became its members (rows of their own): this row is done
            item.stage = "unpacked";
            item.reason = null;
            row(item);
          }
        }
      } catch (err) {
        for (const item of rows) {
          item.stage = "rejected";
          item.reason = errorText(err);
          row(item);
        }
      }
    }
    poll();
  }

  async function poll() {
    clearTimeout(timer);
    if (stopped) return;
    const waiting = [...uploads.values()].filter((i) => i.documentId && ACTIVE.has(i.stage));
    if (waiting.length) {
      try {
        const ids = waiting.map((i) => i.documentId);
        for (let k = 0; k < ids.length; k += 200) {
          const page = await get(`/libraries/${lib.id}/documents`, { ids: ids.slice(k, k + 200), limit: 200 });
          for (const doc of page.items) {
            for (const item of waiting.filter((i) => i.documentId === doc.id)) {
              item.stage = doc.status;
              item.progress = doc.progress;
              item.reason = doc.status === "failed" ? doc.reason : null;
              row(item);
            }
          }
        }
      } catch (err) {
        if (err.status === 401) return;
      }
      refreshList();
      timer = setTimeout(poll, POLL_MS);
    } else {
      refreshList();
    }
  }

  async function reingest(documentId, name) {
    await post(`/documents/${documentId}/reingest`);
    notify(t("doc_reingest_done", { name }));
    const item = [...uploads.values()].find((i) => i.documentId === documentId) || track(name);
    item.documentId = documentId;
    item.stage = "queued";
    item.reason = null;
    item.progress = 0;
    row(item);
    poll();
  }

  async function removeDocument(doc) {
    if (!(await confirmDialog(t("confirm_delete", { name: doc.title || doc.filename })))) return;
    try {
      await del(`/documents/${doc.id}`);
      notify(t("doc_deleted", { name: doc.filename }));
      refreshList();
    } catch (err) {
      notifyError(err);
    }
  }

  function refreshList() {
    recount();
    return load(
      table,
      () => get(`/libraries/${lib.id}/documents`, { q: q.value.trim(), status: status.value, offset, limit: PAGE }),
      (page) => {
        replace(
          pager,
          h("span", { class: "muted" }, t("doc_total", { n: page.total })),
          h("button", { type: "button", class: "btn btn-small", disabled: offset === 0, on: { click: () => { offset = Math.max(0, offset - PAGE); refreshList(); } } }, t("previous")),
          h("button", { type: "button", class: "btn btn-small", disabled: offset + PAGE >= page.total, on: { click: () => { offset += PAGE; refreshList(); } } }, t("next")),
        );
        return dataTable(
          [
            [t("doc_title"), (d) => h("div", {}, h("div", {}, d.title || d.filename), h("div", { class: "small muted" }, d.folder ? `${d.folder}/${d.filename}` : d.filename), d.warnings?.length ? h("details", { class: "small" }, h("summary", {}, t("doc_warnings")), h("ul", {}, d.warnings.map((w) => h("li", {}, w)))) : null), { wrap: true }],
            [t("status"), (d) => h("div", {}, statusBadge(d.status), ACTIVE.has(d.status) ? progressBar(d.progress || 0, "") : null, d.reason ? h("div", { class: "reason" }, d.reason) : null)],
            [t("doc_pages"), (d) => (d.page_count ?? "–"), { num: true }],
            [t("doc_chunks"), (d) => d.chunk_count, { num: true }],
            [t("doc_size"), (d) => formatBytes(d.size), { num: true }],
            [t("doc_updated"), (d) => formatTime(d.updated_at, locale())],
            [
              t("actions"),
              (d) =>
                h(
                  "div",
                  { class: "row" },
                  d.chunk_count ? h("button", { type: "button", class: "btn btn-small", on: { click: () => showChunks(d) } }, t("doc_view_chunks")) : null,
                  canWrite && (d.status === "failed" || d.status === "ready")
                    ? h("button", { type: "button", class: "btn btn-small", on: { click: (e) => busy(e.currentTarget, () => reingest(d.id, d.filename)) } }, t("doc_reingest"))
                    : null,
                  canWrite && d.status !== "deleted"
                    ? h("button", { type: "button", class: "btn btn-small btn-danger", "aria-label": `${t("delete")}: ${d.filename}`, on: { click: () => removeDocument(d) } }, t("delete"))
                    : null,
                ),
            ],
          ],
          page.items,
          { empty: t("doc_none") },
        );
      },
    );
  }

  let dropzone = h("p", { class: "muted" }, t("read_only_note"));
  if (canWrite) {
    const filesInput = h("input", { type: "file", multiple: true, hidden: true });
    const folderInput = h("input", { type: "file", multiple: true, hidden: true, webkitdirectory: true });
    filesInput.addEventListener("change", () => {
      send([...filesInput.files].map((file) => ({ file, path: file.name })));
      filesInput.value = "";
    });
    folderInput.addEventListener("change", () => {
      send([...folderInput.files].map((file) => ({ file, path: file.webkitRelativePath || file.name })));
      folderInput.value = "";
    });
    dropzone = h(
      "div",
      { class: "dropzone", dataset: { testid: "dropzone" } },
      h("p", {}, h("strong", {}, t("drop_title"))),
      h("p", { class: "muted small" }, t("drop_hint")),
      h(
        "div",
        { class: "row" },
        h("button", { type: "button", class: "btn btn-primary", on: { click: () => filesInput.click() } }, t("choose_files")),
        h("button", { type: "button", class: "btn", on: { click: () => folderInput.click() } }, t("choose_folder")),
      ),
      filesInput,
      folderInput,
    );
    dropzone.addEventListener("dragover", (e) => {
      e.preventDefault();
      dropzone.classList.add("over");
    });
    dropzone.addEventListener("dragleave", () => dropzone.classList.remove("over"));
    dropzone.addEventListener("drop", async (e) => {
      e.preventDefault();
      dropzone.classList.remove("over");
      send(await droppedFiles(e.dataTransfer));
    });
  }

  let debounce = null;
  q.addEventListener("input", () => {
    clearTimeout(debounce);
    debounce = setTimeout(() => {
      offset = 0;
      refreshList();
    }, 300);
  });
  status.addEventListener("change", () => {
    offset = 0;
    refreshList();
  });
  replace(
    body,
    dropzone,
    uploadHeader,
    uploadList,
    h("div", { class: "row-between" }, h("h2", {}, t("tab_documents")), h("div", { class: "row" }, q, status)),
    table,
    pager,
  );
  refreshList();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

function showChunks(doc) {
  openDialog(t("chunks_of", { name: doc.title || doc.filename }), () => {
    const list = h("div", { class: "chunk-list viewer-text" });
    load(list, () => get(`/documents/${doc.id}/chunks`), (chunks) =>
      chunks.map((c) =>
        h(
          "section",
          { class: "chunk" },
          h("div", { class: "small muted" }, [t("chunk_meta", { n: c.ordinal + 1, kind: c.kind, tokens: c.token_count }), c.page_start ? `p. ${c.page_start}${c.page_end && c.page_end !== c.page_start ? `–${c.page_end}` : ""}` : null, c.heading_path.join(" › ")].filter(Boolean).join(" · ")),
          h("p", { class: "chunk-text" }, c.text),
        ),
      ),
    );
    return list;
  }, { wide: true });
}

// --- access -----------------------------------------------------------------------------------

async function accessTab(body, lib) {
  replace(body, spinner());
  let users;
  let groups;
  let folders;
  let docs;
  try {
    const [u, g, d] = await Promise.all([get("/users"), get("/groups"), get(`/libraries/${lib.id}/documents`, { limit: 1000 })]);
    users = u;
    groups = g;
    docs = d.items.filter((x) => x.status !== "deleted");
    folders = [...new Set(docs.flatMap((x) => (x.folder ? x.folder.split("/").map((_, i, parts) => parts.slice(0, i + 1).join("/")) : [])))].sort();
  } catch (err) {
    replace(body, errorBox(err));
    return null;
  }
  const userName = (id) => users.find((u) => u.id === id)?.username ?? `#${id}`;
  const groupName = (id) => groups.find((g) => g.id === id)?.name ?? `#${id}`;
  const grantee = (g) => (g.user_id ? `👤 ${userName(g.user_id)}` : `👥 ${groupName(g.group_id)}`);
  const grantsBox = h("div");
  const scopedBox = h("div");

  function granteePicker() {
    const kind = h("select", {}, h("option", { value: "user" }, t("grantee_user")), h("option", { value: "group" }, t("grantee_group")));
    const who = h("select", { required: true });
    const fill = () => {
      const options = kind.value === "user" ? users.filter((u) => u.is_active).map((u) => [u.id, u.display_name ? `${u.username} (${u.display_name})` : u.username]) : groups.map((g) => [g.id, g.name]);
      replace(who, options.map(([id, label]) => h("option", { value: String(id) }, label)));
    };
    kind.addEventListener("change", fill);
    fill();
    return { fields: [field(t("grantee_kind"), kind), field(t("grantee"), who)], value: () => (kind.value === "user" ? { user_id: Number(who.value) } : { group_id: Number(who.value) }) };
  }

  async function refreshGrants() {
    await load(grantsBox, () => get(`/libraries/${lib.id}/grants`), (grants) =>
      dataTable(
        [
          [t("grantee"), grantee],
          [t("permission"), (g) => t(`perm_${g.permission}`)],
          [t("created"), (g) => formatTime(g.created_at, locale())],
          [t("actions"), (g) => h("button", { type: "button", class: "btn btn-small btn-danger", on: { click: () => revoke(`/libraries/${lib.id}/grants/${g.id}`, grantee(g), refreshGrants) } }, t("grant_revoke"))],
        ],
        grants,
      ),
    );
  }

  async function refreshScoped() {
    await load(scopedBox, () => get(`/libraries/${lib.id}/scoped-grants`), (grants) =>
      dataTable(
        [
          [t("scoped_target"), (g) => (g.document_id ? t("scoped_document", { name: docs.find((d) => d.id === g.document_id)?.filename ?? `#${g.document_id}` }) : t("scoped_folder", { name: g.folder }))],
          [t("grantee"), grantee],
          [t("created"), (g) => formatTime(g.created_at, locale())],
          [t("actions"), (g) => h("button", { type: "button", class: "btn btn-small btn-danger", on: { click: () => revoke(`/libraries/${lib.id}/scoped-grants/${g.id}`, grantee(g), refreshScoped) } }, t("grant_revoke"))],
        ],
        grants,
      ),
    );
  }

  async function revoke(path, label, then) {
    if (!(await confirmDialog(t("confirm_delete", { name: label }), t("grant_revoke")))) return;
    try {
      await del(path);
      notify(t("grant_revoked"));
      then();
    } catch (err) {
      notifyError(err);
    }
  }

  const grantPick = granteePicker();
  const permission = h("select", {}, ["read", "write", "manage"].map((p) => h("option", { value: p }, t(`perm_${p}`))));
  const grantMsg = h("div", { class: "form-message" });
  const grantBtn = h("button", { type: "submit", class: "btn btn-primary" }, t("grant_add"));
  const grantForm = h(
    "form",
    {
      class: "form-inline",
      on: {
        submit: (e) => {
          e.preventDefault();
          replace(grantMsg);
          busy(grantBtn, async () => {
            try {
              await post(`/libraries/${lib.id}/grants`, { ...grantPick.value(), permission: permission.value });
              refreshGrants();
            } catch (err) {
              replace(grantMsg, errorBox(err));
            }
          });
        },
      },
    },
    grantPick.fields,
    field(t("permission"), permission),
    grantBtn,
  );

  const scopePick = granteePicker();
  const target = h(
    "select",
    { required: true },
    folders.length ? h("optgroup", { label: t("folders") }, folders.map((f) => h("option", { value: `folder:${f}` }, f))) : null,
    docs.length ? h("optgroup", { label: t("tab_documents") }, docs.map((d) => h("option", { value: `doc:${d.id}` }, d.folder ? `${d.folder}/${d.filename}` : d.filename))) : null,
  );
  const scopeMsg = h("div", { class: "form-message" });
  const scopeBtn = h("button", { type: "submit", class: "btn btn-primary" }, t("scoped_add"));
  const scopeForm = h(
    "form",
    {
      class: "form-inline",
      on: {
        submit: (e) => {
          e.preventDefault();
          replace(scopeMsg);
          const [kind, value] = target.value.split(/:(.*)/s);
          const scope = kind === "folder" ? { folder: value } : { document_id: Number(value) };
          busy(scopeBtn, async () => {
            try {
              await post(`/libraries/${lib.id}/scoped-grants`, { ...scope, ...scopePick.value() });
              refreshScoped();
            } catch (err) {
              replace(scopeMsg, errorBox(err));
            }
          });
        },
      },
    },
    field(t("scoped_target"), target),
    scopePick.fields,
    scopeBtn,
  );

  replace(
    body,
    h(
      "section",
      { class: "card" },
      h("h2", {}, t("grants")),
      h("ul", { class: "small muted" }, h("li", {}, t("perm_read_help")), h("li", {}, t("perm_write_help")), h("li", {}, t("perm_manage_help"))),
      grantForm,
      grantMsg,
      grantsBox,
    ),
    h("section", { class: "card" }, h("h2", {}, t("scoped")), h("p", { class: "muted small" }, t("scoped_help")), docs.length ? scopeForm : h("p", { class: "muted" }, t("doc_none")), scopeMsg, scopedBox),
  );
  refreshGrants();
  refreshScoped();
  return null;
}

// --- settings ---------------------------------------------------------------------------------

function settingsTab(body, lib, ctx) {
  const name = h("input", { value: lib.name, required: true, maxlength: 200 });
  const description = h("textarea", { rows: 3, maxlength: 5000 });
  description.value = lib.description || "";
  const allow = h("input", { type: "checkbox", checked: lib.allow_download !== false });
  const msg = h("div", { class: "form-message" });
  const save = h("button", { type: "submit", class: "btn btn-primary" }, t("save"));
  const form = h(
    "form",
    {
      class: "card narrow",
      on: {
        submit: (e) => {
          e.preventDefault();
          replace(msg);
          busy(save, async () => {
            try {
              await patch(`/libraries/${lib.id}`, { name: name.value.trim(), description: description.value.trim(), allow_download: allow.checked });
              notify(t("saved"));
              ctx.navigate(`#/admin/libraries/${lib.id}/settings`, { replaceState: true });
            } catch (err) {
              replace(msg, errorBox(err));
            }
          });
        },
      },
    },
    h("h2", {}, t("settings_title")),
    field(t("lib_name"), name),
    field(t("description"), description),
    h("label", { class: "check" }, allow, h("span", {}, t("allow_download"), h("small", { class: "muted" }, t("allow_download_help")))),
    msg,
    save,
  );
  let danger = null;
  if (ctx.isAdmin) {
    const confirmName = h("input", { autocomplete: "off" });
    const remove = h("button", { type: "button", class: "btn btn-danger", disabled: true }, t("delete_library"));
    confirmName.addEventListener("input", () => {
      remove.disabled = confirmName.value !== lib.name;
    });
    remove.addEventListener("click", () =>
      busy(remove, async () => {
        await del(`/libraries/${lib.id}`);
        notify(t("library_deleted"));
        ctx.navigate("#/admin/libraries");
      }),
    );
    danger = h("section", { class: "card narrow" }, h("h2", {}, t("delete_library")), h("p", { class: "muted" }, t("delete_library_help")), field(t("delete_library_confirm"), confirmName), remove);
  }
  replace(body, form, danger);
  return null;
}
