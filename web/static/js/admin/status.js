// System status (administrators only): workers, the ingest queue, documents by status, the
// model servers, disk use and each library's index — refreshed every 10 seconds. Every part
// shows its own error, so one that is down does not hide the others.

import { get } from "../api.js";
import { formatBytes, formatTime, h, replace } from "../dom.js";
import { addStrings, locale, t } from "../i18n.js";
import { badge, errorBox, errorText, spinner } from "../ui.js";
import { adminFrame } from "./shell.js";
import { cardTable, pageHead, refuseUnlessAdmin } from "./kit.js";

addStrings({
  en: {
    st_title: "System status",
    st_refresh: "Refresh",
    st_auto: "Refresh every 10 s",
    st_checked: "Checked {time} · took {ms} ms",
    st_refresh_failed: "Could not refresh: {message}. Showing the last result.",
    st_ok: "OK",
    st_problem: "Problem",
    st_missing: "Not reported by the server.",
    st_workers: "Workers",
    st_workers_online: "online",
    st_worker_tasks: "{n} running",
    st_no_workers: "No worker is online: uploads wait in the queue.",
    st_queue: "Ingest queue",
    st_queue_waiting: "waiting",
    st_queue_name: "Queue",
    st_queue_unacked: "{n} taken by a worker, not finished",
    st_documents: "Documents",
    st_documents_total: "in all libraries",
    st_doc_queued: "Queued",
    st_doc_parsing: "Parsing",
    st_doc_embedding: "Embedding",
    st_doc_indexing: "Indexing",
    st_doc_ready: "Ready",
    st_doc_failed: "Failed",
    st_doc_deleted: "Deleted",
    st_disk: "Disk",
    st_disk_used: "Used",
    st_disk_used_word: "used",
    st_disk_free: "Free",
    st_disk_total: "Total",
    st_disk_originals: "Uploaded originals",
    st_disk_at_least: "at least {size}",
    st_disk_pct: "{pct}% used",
    st_models: "Model servers",
    st_model_main: "Answer model",
    st_model_safety: "Safety model",
    st_model: "Model",
    st_not_configured: "Not configured",
    st_up: "Up",
    st_down: "Down",
    st_latency: "{ms} ms",
    st_wrong_model: "Does not serve the model",
    st_no_replicas: "No server address configured.",
    st_indexes: "Index size per library",
    st_library: "Library",
    st_chunks: "Chunks",
    st_vectors: "Vectors",
    st_vectors_en: "English vectors",
    st_version: "Version",
    st_size: "Size on disk",
    st_error: "Error",
    st_not_built: "not built yet",
    st_indexes_total: "All indexes: {size}",
    st_no_libraries: "No libraries yet.",
  },
  zh: {
    st_title: "系统状态",
    st_refresh: "刷新",
    st_auto: "每 10 秒自动刷新",
    st_checked: "检查于 {time} · 用时 {ms} 毫秒",
    st_refresh_failed: "刷新失败：{message}。当前显示的是上一次的结果。",
    st_ok: "正常",
    st_problem: "异常",
    st_missing: "服务器未报告此项。",
    st_workers: "后台任务进程",
    st_workers_online: "在线",
    st_worker_tasks: "正在运行 {n} 个任务",
    st_no_workers: "没有在线的任务进程：上传的文档会在队列中等待。",
    st_queue: "导入队列",
    st_queue_waiting: "等待中",
    st_queue_name: "队列",
    st_queue_unacked: "{n} 个已被领取、尚未完成",
    st_documents: "文档",
    st_documents_total: "全部知识库",
    st_doc_queued: "排队中",
    st_doc_parsing: "解析中",
    st_doc_embedding: "向量化中",
    st_doc_indexing: "建索引中",
    st_doc_ready: "就绪",
    st_doc_failed: "失败",
    st_doc_deleted: "已删除",
    st_disk: "磁盘",
    st_disk_used: "已用",
    st_disk_used_word: "已用",
    st_disk_free: "可用",
    st_disk_total: "总量",
    st_disk_originals: "上传的原始文件",
    st_disk_at_least: "至少 {size}",
    st_disk_pct: "已用 {pct}%",
    st_models: "模型服务",
    st_model_main: "问答模型",
    st_model_safety: "安全审核模型",
    st_model: "模型",
    st_not_configured: "未配置",
    st_up: "在线",
    st_down: "离线",
    st_latency: "{ms} 毫秒",
    st_wrong_model: "未提供所需模型",
    st_no_replicas: "未配置服务地址。",
    st_indexes: "各知识库索引大小",
    st_library: "知识库",
    st_chunks: "文本块",
    st_vectors: "向量",
    st_vectors_en: "英文向量",
    st_version: "版本",
    st_size: "磁盘占用",
    st_error: "错误",
    st_not_built: "尚未建立",
    st_indexes_total: "全部索引：{size}",
    st_no_libraries: "还没有知识库。",
  },
});

const INTERVAL_MS = 10000;
const AUTO_KEY = "zhiku.status.auto";
const DOC_KIND = { ready: "ok", failed: "danger", deleted: "neutral", queued: "info", parsing: "info", embedding: "info", indexing: "info" };

const num = (n) => (n === null || n === undefined ? "–" : Number(n).toLocaleString(locale()));

/** A part's own error (not role=alert: it would be re-announced on every refresh). */
function partError(text) {
  return text ? h("div", { class: "error-box part-error" }, h("span", {}, String(text))) : null;
}

function okBadge(part) {
  if (!part) return badge(t("st_problem"), "danger");
  return part.ok ? badge(t("st_ok"), "ok") : badge(t("st_problem"), "danger");
}

/** A card for one part: title, health badge, the part's error, then `body(part)`. */
function partCard(title, part, body, extraClass) {
  return h(
    "section",
    { class: ["card", "st-card", extraClass], "aria-label": title },
    h("div", { class: "row-between st-card-head" }, h("h2", {}, title), okBadge(part)),
    part ? [partError(part.error), body(part)] : partError(t("st_missing")),
  );
}

function workersCard(w) {
  return partCard(t("st_workers"), w, (part) => [
    h("p", { class: "stat-line" }, h("span", { class: "stat" }, num(part.online ?? (part.workers || []).length)), " ", h("span", { class: "muted" }, t("st_workers_online"))),
    (part.workers || []).length
      ? h(
          "ul",
          { class: "st-list" },
          part.workers.map((wk) => h("li", {}, h("code", { class: "st-name" }, wk.name), h("span", { class: "muted small" }, t("st_worker_tasks", { n: wk.active_tasks ?? 0 })))),
        )
      : part.error
        ? null
        : h("p", { class: "muted small" }, t("st_no_workers")),
  ]);
}

function queueCard(q) {
  return partCard(t("st_queue"), q, (part) => [
    part.depth === null || part.depth === undefined
      ? null
      : h("p", { class: "stat-line" }, h("span", { class: "stat" }, num(part.depth)), " ", h("span", { class: "muted" }, t("st_queue_waiting"))),
    part.unacked !== null && part.unacked !== undefined ? h("p", { class: "muted small" }, t("st_queue_unacked", { n: num(part.unacked) })) : null,
    part.name ? h("p", { class: "muted small" }, `${t("st_queue_name")}: `, h("code", {}, part.name)) : null,
  ]);
}

function documentsCard(d) {
  return partCard(t("st_documents"), d, (part) => {
    const entries = Object.entries(part.by_status || {});
    const total = part.total ?? entries.reduce((a, [, n]) => a + Number(n || 0), 0);
    return [
      h("p", { class: "stat-line" }, h("span", { class: "stat" }, num(total)), " ", h("span", { class: "muted" }, t("st_documents_total"))),
      entries.length
        ? h(
            "ul",
            { class: "st-status-list" },
            entries.map(([status, n]) =>
              h(
                "li",
                { class: n ? null : "muted" },
                n ? badge(DOC_KIND[status] ? t(`st_doc_${status}`) : status, DOC_KIND[status] || "neutral") : h("span", {}, DOC_KIND[status] ? t(`st_doc_${status}`) : status),
                h("span", { class: "num" }, num(n)),
              ),
            ),
          )
        : null,
    ];
  });
}

function diskCard(d) {
  return partCard(t("st_disk"), d, (part) => {
    const total = part.total_bytes;
    const used = part.used_bytes;
    // like df: used of what the data dir can use (reserved blocks left out)
    const usable = used !== null && used !== undefined && part.free_bytes !== null && part.free_bytes !== undefined ? Number(used) + Number(part.free_bytes) : Number(total || 0);
    const pct = usable ? Math.round((Number(used || 0) / usable) * 100) : null;
    const bar = h("div", { class: ["progress", pct !== null && pct >= 90 ? "failed" : null], role: "img", "aria-label": pct === null ? "–" : t("st_disk_pct", { pct }) }, h("span"));
    if (pct !== null) bar.firstChild.style.width = `${Math.min(100, Math.max(0, pct))}%`;
    const originals =
      part.originals_bytes === null || part.originals_bytes === undefined
        ? "–"
        : part.originals_complete === false
          ? t("st_disk_at_least", { size: formatBytes(part.originals_bytes) })
          : formatBytes(part.originals_bytes);
    return [
      h("p", { class: "stat-line" }, h("span", { class: "stat" }, pct === null ? "–" : `${pct}%`), " ", h("span", { class: "muted" }, t("st_disk_used_word"))),
      pct === null ? null : bar,
      h(
        "dl",
        { class: "kv small st-kv" },
        h("dt", {}, t("st_disk_used")),
        h("dd", {}, formatBytes(used)),
        h("dt", {}, t("st_disk_free")),
        h("dd", {}, formatBytes(part.free_bytes)),
        h("dt", {}, t("st_disk_total")),
        h("dd", {}, formatBytes(total)),
        h("dt", {}, t("st_disk_originals")),
        h("dd", {}, originals),
      ),
    ];
  });
}

function modelBlock(role, m) {
  const title = role === "safety" ? t("st_model_safety") : role === "main" ? t("st_model_main") : role;
  if (!m) return null;
  const replicas = m.replicas || [];
  return h(
    "section",
    { class: "card st-card", "aria-label": title },
    h(
      "div",
      { class: "row-between st-card-head" },
      h("h3", {}, title),
      !m.configured
        ? badge(t("st_not_configured"), "neutral")
        : replicas.length && replicas.every((r) => r.up && r.serves_model !== false)
          ? badge(t("st_up"), "ok")
          : badge(t("st_problem"), "danger"),
    ),
    m.model ? h("p", { class: "small" }, h("span", { class: "muted" }, `${t("st_model")}: `), h("code", {}, m.model)) : null,
    m.note ? h("p", { class: "muted small" }, m.note) : null,
    m.configured && !replicas.length ? h("p", { class: "muted small" }, t("st_no_replicas")) : null,
    replicas.length
      ? h(
          "ul",
          { class: "st-replicas" },
          replicas.map((r) =>
            h(
              "li",
              {},
              h(
                "div",
                { class: "row" },
                r.up ? badge(t("st_up"), "ok") : badge(t("st_down"), "danger"),
                r.up && r.serves_model === false ? badge(t("st_wrong_model"), "warn") : null,
                h("code", { class: "st-url" }, r.url),
                r.response_ms !== null && r.response_ms !== undefined ? h("span", { class: "muted small" }, t("st_latency", { ms: Math.round(r.response_ms) })) : null,
              ),
              partError(r.error),
            ),
          ),
        )
      : null,
  );
}

/** A part's error joins its items' errors ("a: x; b: y"); keep what the items do not show. */
function leftoverError(error, itemErrors) {
  const shown = itemErrors.filter(Boolean);
  return (error || "")
    .split("; ")
    .filter((piece) => piece && !shown.some((e) => piece.endsWith(e)))
    .join("; ");
}

function modelsSection(models) {
  const title = t("st_models");
  if (!models) return h("section", { class: "st-section", "aria-label": title }, h("h2", {}, title), partError(t("st_missing")));
  const replicaErrors = ["main", "safety"].flatMap((role) => (models[role]?.replicas || []).map((r) => r.error));
  const leftover = leftoverError(models.error, replicaErrors);
  return h(
    "section",
    { class: "st-section", "aria-label": title },
    h("div", { class: "row-between st-card-head" }, h("h2", {}, title), okBadge(models)),
    partError(leftover),
    h("div", { class: "cards st-models" }, modelBlock("main", models.main), modelBlock("safety", models.safety)),
  );
}

function indexesSection(ix) {
  const title = t("st_indexes");
  return h(
    "section",
    { class: "st-section", "aria-label": title },
    h(
      "div",
      { class: "row-between st-card-head" },
      h("h2", {}, title),
      h("span", { class: "row" }, ix && ix.total_bytes !== undefined ? h("span", { class: "muted small" }, t("st_indexes_total", { size: formatBytes(ix.total_bytes) })) : null, okBadge(ix)),
    ),
    ix ? partError(leftoverError(ix.error, (ix.libraries || []).map((x) => x.error))) : partError(t("st_missing")),
    ix
      ? cardTable(
          [
            [t("st_library"), (x) => h("strong", {}, x.library_name || `#${x.library_id}`), { wrap: true }],
            [t("st_chunks"), (x) => num(x.chunks), { num: true }],
            [t("st_vectors"), (x) => num(x.vectors), { num: true }],
            [t("st_vectors_en"), (x) => num(x.vectors_en), { num: true }],
            [t("st_version"), (x) => (x.version === null || x.version === undefined ? h("span", { class: "muted" }, t("st_not_built")) : `v${x.version}`), { num: true }],
            [t("st_size"), (x) => formatBytes(x.bytes), { num: true }],
            [t("st_error"), (x) => (x.error ? h("span", { class: "reason" }, x.error) : "–"), { wrap: true }],
          ],
          ix.libraries || [],
          { caption: title, empty: t("st_no_libraries") },
        )
      : null,
  );
}

export async function render(main, _params, ctx) {
  const content = adminFrame(main, "status", ctx);
  if (refuseUnlessAdmin(content, ctx, t("st_title"))) return undefined;

  const state = { data: null, controller: null, timer: null, gone: false };
  const meta = h("p", { class: "muted small st-meta" });
  const failure = h("div", { class: "st-failure", "aria-live": "polite" });
  const body = h("div", { class: "st-body" }, spinner());
  const refreshBtn = h("button", { type: "button", class: "btn", on: { click: () => refresh(true) } }, "↻ ", t("st_refresh"));
  const auto = h("input", {
    type: "checkbox",
    checked: localStorage.getItem(AUTO_KEY) !== "0",
    on: {
      change: () => {
        localStorage.setItem(AUTO_KEY, auto.checked ? "1" : "0");
        if (auto.checked) refresh(false);
      },
    },
  });
  replace(
    content,
    pageHead(t("st_title"), h("label", { class: "check st-auto" }, auto, h("span", {}, t("st_auto"))), refreshBtn),
    meta,
    failure,
    body,
  );

  function show(s) {
    meta.textContent = s.checked_at ? t("st_checked", { time: formatTime(s.checked_at, locale()), ms: num(Math.round(s.took_ms || 0)) }) : "";
    replace(
      body,
      h("div", { class: "cards st-cards" }, workersCard(s.workers), queueCard(s.queue), documentsCard(s.documents), diskCard(s.disk)),
      modelsSection(s.models),
      indexesSection(s.indexes),
    );
  }

  let lastFailure = "";
  function setFailure(text) {
    if (text === lastFailure) return; // unchanged: do not announce it again
    lastFailure = text;
    replace(failure, text ? h("div", { class: "error-box" }, h("span", {}, text)) : null);
  }

  async function refresh(byHand) {
    if (state.gone) return;
    if (state.controller) {
      if (!byHand) return; // the last check is still running
      state.controller.abort();
    }
    const controller = new AbortController();
    state.controller = controller;
    // aria-busy, not disabled: disabling would take the focus from a keyboard user every 10 s
    refreshBtn.setAttribute("aria-busy", "true");
    try {
      const s = await get("/system/status", undefined, { signal: controller.signal });
      if (state.controller !== controller || state.gone) return;
      state.data = s || {};
      setFailure("");
      show(state.data);
    } catch (err) {
      if (err.name === "AbortError" || state.gone) return;
      if (state.data) setFailure(t("st_refresh_failed", { message: errorText(err).replace(/[.。]$/, "") }));
      else replace(body, errorBox(err, t("retry"), () => refresh(true)));
    } finally {
      if (state.controller === controller) {
        state.controller = null;
        refreshBtn.removeAttribute("aria-busy");
      }
    }
  }

  state.timer = setInterval(() => {
    if (auto.checked && !document.hidden) refresh(false);
  }, INTERVAL_MS);
  refresh(true);

  return () => {
    state.gone = true;
    clearInterval(state.timer);
    if (state.controller) state.controller.abort();
  };
}
