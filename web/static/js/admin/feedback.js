// Feedback on answers (administrators and librarians): filter by verdict and library, read the
// question, the answer as it was rated and the comment, page through it.

import { get } from "../api.js";
import { field, formatTime, h, replace, uid } from "../dom.js";
import { addStrings, locale, t } from "../i18n.js";
import { badge, errorBox, spinner } from "../ui.js";
import { adminFrame } from "./shell.js";
import { pageHead } from "./kit.js";

addStrings({
  en: {
    fb_title: "Feedback",
    fb_intro: "What readers said about answers, newest first. Use it to find gaps and outdated documents.",
    fb_rating: "Verdict",
    fb_all: "All",
    fb_up: "👍 Helpful",
    fb_down: "👎 Not helpful",
    fb_library: "Library",
    fb_all_libraries: "All libraries",
    fb_total: "{total} entries",
    fb_range: "{from}–{to} of {total}",
    fb_none: "No feedback matches these filters.",
    fb_question: "Question",
    fb_answer: "Answer",
    fb_comment: "Comment",
    fb_no_comment: "No comment.",
    fb_cited: "Cited documents",
    fb_no_cited: "None",
    fb_withheld: "The answer rests on libraries or documents you may not read, so it is not shown.",
    fb_more: "Show more",
    fb_less: "Show less",
    fb_edited: "changed {time}",
    fb_library_n: "library #{id}",
    fb_empty_answer: "(empty)",
    fb_pages: "Pages",
    fb_item: "Feedback from {user}",
  },
  zh: {
    fb_title: "用户反馈",
    fb_intro: "读者对回答的评价，按时间倒序排列。可据此发现知识空缺和过时文档。",
    fb_rating: "评价",
    fb_all: "全部",
    fb_up: "👍 有帮助",
    fb_down: "👎 没帮助",
    fb_library: "知识库",
    fb_all_libraries: "全部知识库",
    fb_total: "共 {total} 条",
    fb_range: "第 {from}–{to} 条，共 {total} 条",
    fb_none: "没有符合条件的反馈。",
    fb_question: "问题",
    fb_answer: "回答",
    fb_comment: "意见",
    fb_no_comment: "未填写意见。",
    fb_cited: "引用的文档",
    fb_no_cited: "无",
    fb_withheld: "该回答依据了您无权阅读的知识库或文档，因此不予显示。",
    fb_more: "展开全文",
    fb_less: "收起",
    fb_edited: "修改于 {time}",
    fb_library_n: "知识库 #{id}",
    fb_empty_answer: "（空）",
    fb_pages: "分页",
    fb_item: "{user} 的反馈",
  },
});

const LIMIT = 20;
const CLIP = 200; // characters of an answer shown before "Show more"

/** Long text, clipped with a "Show more" toggle. */
function clipped(text) {
  const chars = Array.from(text || "");
  const body = h("div", { class: "fb-text" });
  if (chars.length <= CLIP) {
    body.textContent = text || t("fb_empty_answer");
    return body;
  }
  const short = `${chars.slice(0, CLIP).join("").trimEnd()}…`;
  body.id = uid("answer");
  body.textContent = short;
  const toggle = h("button", { type: "button", class: "btn btn-ghost btn-small fb-toggle", "aria-expanded": "false", "aria-controls": body.id }, t("fb_more"));
  toggle.addEventListener("click", () => {
    const open = toggle.getAttribute("aria-expanded") !== "true";
    toggle.setAttribute("aria-expanded", String(open));
    body.textContent = open ? text : short;
    toggle.textContent = open ? t("fb_less") : t("fb_more");
  });
  return h("div", {}, body, toggle);
}

export async function render(main, _params, ctx) {
  const content = adminFrame(main, "feedback", ctx);
  const state = { rating: "", libraryId: "", offset: 0, total: 0, libraries: [], controller: null };

  const rating = h(
    "select",
    { on: { change: () => reload(0) } },
    h("option", { value: "" }, t("fb_all")),
    h("option", { value: "1" }, t("fb_up")),
    h("option", { value: "-1" }, t("fb_down")),
  );
  const library = h("select", { on: { change: () => reload(0) } }, h("option", { value: "" }, t("fb_all_libraries")));
  const summary = h("p", { class: "muted small", role: "status", "aria-live": "polite" });
  const list = h("div", { class: "fb-list" });
  const prev = h("button", { type: "button", class: "btn btn-small", on: { click: () => reload(Math.max(0, state.offset - LIMIT), prev) } }, "‹ ", t("previous"));
  const next = h("button", { type: "button", class: "btn btn-small", on: { click: () => reload(state.offset + LIMIT, next) } }, t("next"), " ›");
  const pageInfo = h("span", { class: "small muted" });
  const pager = h("nav", { class: "pager", "aria-label": t("fb_pages"), hidden: true }, pageInfo, prev, next);
  replace(
    content,
    pageHead(t("fb_title")),
    h("p", { class: "muted" }, t("fb_intro")),
    h("form", { class: "form-inline", on: { submit: (e) => e.preventDefault() } }, field(t("fb_rating"), rating), field(t("fb_library"), library)),
    summary,
    list,
    pager,
  );

  const libName = (id) => state.libraries.find((l) => l.id === id)?.name || t("fb_library_n", { id });

  function item(fb) {
    const up = Number(fb.rating) > 0;
    const edited = fb.updated_at && fb.created_at && new Date(fb.updated_at) - new Date(fb.created_at) > 1000;
    const user = fb.username || `#${fb.user_id}`;
    return h(
      "article",
      { class: ["fb-item", "card", up ? "fb-up" : "fb-down"], "aria-label": t("fb_item", { user }) },
      h(
        "header",
        { class: "fb-head" },
        badge(up ? t("fb_up") : t("fb_down"), up ? "ok" : "danger"),
        h("strong", {}, user),
        h("time", { class: "muted small", datetime: fb.created_at }, formatTime(fb.created_at, locale())),
        edited ? h("span", { class: "muted small" }, t("fb_edited", { time: formatTime(fb.updated_at, locale()) })) : null,
        h("span", { class: "badges" }, (fb.library_ids || []).map((id) => badge(libName(id), "neutral"))),
      ),
      h(
        "dl",
        { class: "fb-body" },
        h("dt", {}, t("fb_question")),
        h("dd", { class: "fb-text" }, fb.question || "–"),
        h("dt", {}, t("fb_answer")),
        h("dd", {}, fb.answer_withheld ? h("p", { class: "muted fb-withheld" }, t("fb_withheld")) : clipped(fb.answer)),
        h("dt", {}, t("fb_comment")),
        h("dd", {}, fb.comment ? h("blockquote", { class: "fb-comment fb-text" }, fb.comment) : h("span", { class: "muted" }, t("fb_no_comment"))),
        h("dt", {}, t("fb_cited")),
        h("dd", {}, fb.document_ids && fb.document_ids.length ? fb.document_ids.map((id) => `#${id}`).join(", ") : h("span", { class: "muted" }, t("fb_no_cited"))),
      ),
    );
  }

  async function reload(offset = state.offset, focusAfter = null) {
    if (state.controller) state.controller.abort();
    const controller = new AbortController();
    state.controller = controller;
    state.offset = offset;
    replace(list, spinner());
    try {
      const page = await get(
        "/feedback",
        { rating: rating.value, library_id: library.value, offset, limit: LIMIT },
        { signal: controller.signal },
      );
      if (state.controller !== controller) return;
      const items = page.items || [];
      state.total = Number(page.total ?? items.length);
      summary.textContent = t("fb_total", { total: state.total });
      replace(list, items.length ? items.map(item) : h("p", { class: "muted adm-empty" }, t("fb_none")));
      const from = items.length ? offset + 1 : 0;
      pageInfo.textContent = t("fb_range", { from, to: offset + items.length, total: state.total });
      prev.disabled = offset <= 0;
      next.disabled = offset + items.length >= state.total;
      pager.hidden = state.total <= LIMIT && offset === 0;
      if (focusAfter) {
        // a page change: move to the first entry of the new page (or keep the button)
        const first = list.querySelector(".fb-item");
        if (first) {
          first.setAttribute("tabindex", "-1");
          first.focus();
        } else if (!focusAfter.disabled) focusAfter.focus();
      }
    } catch (err) {
      if (err.name === "AbortError") return;
      replace(list, errorBox(err, t("retry"), () => reload(offset)));
      pager.hidden = true;
      summary.textContent = "";
    } finally {
      if (state.controller === controller) state.controller = null;
    }
  }

  try {
    const libs = await get("/libraries");
    // librarians review feedback on the libraries they manage; other ids are refused
    state.libraries = libs;
    for (const lib of libs.filter((l) => ctx.isAdmin || l.permission === "manage").sort((a, b) => a.name.localeCompare(b.name))) {
      library.append(h("option", { value: String(lib.id) }, lib.name));
    }
  } catch {
    /* the list still loads; libraries show as ids */
  }
  reload(0);
  return () => state.controller && state.controller.abort();
}
