// Asking: conversations in a sidebar, the answer streaming in as safe Markdown, citation chips,
// the sources panel, feedback, stop and retry.

import { ApiError, del, get, patch, put, streamEvents } from "./api.js";
import { $, $all, field, formatTime, h, replace, setSafeHtml } from "./dom.js";
import { addStrings, locale, t } from "./i18n.js";
import { badge, busy, confirmDialog, errorBox, errorText, notifyError, openDialog } from "./ui.js";
import { openSource } from "./viewer.js";

addStrings({
  en: {
    new_chat: "New conversation",
    history: "Conversations",
    no_conversations: "No conversations yet.",
    untitled: "Untitled",
    libraries_to_ask: "Libraries to ask",
    libraries_all: "All libraries ({n})",
    libraries_some: "{n} of {total} libraries",
    libraries_none_selected: "Choose at least one library to ask.",
    no_libraries: "You have no libraries to ask yet. Ask an administrator for access.",
    ask_placeholder: "Ask a question…",
    keys_hint: "Enter sends · Shift+Enter starts a new line",
    question: "Question",
    send: "Send",
    stop: "Stop",
    stopped: "Stopped. The answer was not finished.",
    thinking: "Searching the libraries…",
    not_found: "Not found in the knowledge base",
    not_found_hint: "No passage in the selected libraries answers this. Try other words or other libraries.",
    blocked: "Blocked by the safety policy",
    sources: "Sources",
    sources_for: "Sources of the selected answer",
    no_sources: "Click a citation such as [1] to see the passage it rests on.",
    open_source: "Open source",
    page: "p. {n}",
    pages: "pp. {a}–{b}",
    helpful: "Helpful",
    not_helpful: "Not helpful",
    feedback_comment: "What could be better? (optional)",
    feedback_send: "Send feedback",
    feedback_thanks: "Thank you for the feedback.",
    rename_conversation: "Rename conversation",
    title: "Title",
    welcome_title: "Ask your knowledge base",
    welcome_text: "Answers come only from the libraries you may read and cite the passages they rest on.",
    show_history: "Conversations",
    show_sources: "Sources",
    sources_withheld: "Some sources of this answer are no longer available to you.",
    citations_n: "Sources ({n})",
    copy: "Copy",
    copied: "Copied",
    empty_answer: "The model gave no answer. Retry, or ask in other words.",
    quoted_answer: "Quoted from the documents: the model gave no answer. Retry, or ask in other words.",
  },
  zh: {
    new_chat: "新建对话",
    history: "对话",
    no_conversations: "还没有对话。",
    untitled: "未命名",
    libraries_to_ask: "检索的知识库",
    libraries_all: "全部知识库（{n}）",
    libraries_some: "已选 {n}/{total} 个知识库",
    libraries_none_selected: "请至少选择一个知识库。",
    no_libraries: "您还没有可提问的知识库，请联系管理员授权。",
    ask_placeholder: "输入问题…",
    keys_hint: "Enter 发送 · Shift+Enter 换行",
    question: "问题",
    send: "发送",
    stop: "停止",
    stopped: "已停止，回答未完成。",
    thinking: "正在检索知识库…",
    not_found: "知识库中未找到答案",
    not_found_hint: "所选知识库中没有能回答该问题的段落。请换个说法或选择其他知识库。",
    blocked: "已被安全策略拦截",
    sources: "来源",
    sources_for: "所选回答的来源",
    no_sources: "点击 [1] 等引用标记，查看回答所依据的段落。",
    open_source: "查看原文",
    page: "第 {n} 页",
    pages: "第 {a}–{b} 页",
    helpful: "有帮助",
    not_helpful: "没帮助",
    feedback_comment: "哪里可以改进？（可选）",
    feedback_send: "提交反馈",
    feedback_thanks: "感谢您的反馈。",
    rename_conversation: "重命名对话",
    title: "标题",
    welcome_title: "向知识库提问",
    welcome_text: "回答只来自您有权阅读的知识库，并注明所依据的段落。",
    show_history: "对话",
    show_sources: "来源",
    sources_withheld: "此回答的部分来源您已无权查看。",
    citations_n: "来源（{n}）",
    copy: "复制",
    copied: "已复制",
    empty_answer: "模型没有给出回答。请重试，或换个说法提问。",
    quoted_answer: "原文摘录：模型没有给出回答。请重试，或换个说法提问。",
  },
});

const SELECTION_KEY = "zhiku.libraries";
const NEAR_BOTTOM_PX = 80;

function pagesLabel(start, end) {
  if (!start) return "";
  return end && end !== start ? t("pages", { a: start, b: end }) : t("page", { n: start });
}

/** The deepest last block of rendered Markdown, where streamed text continues. */
function lastBlock(root) {
  let el = root.lastElementChild;
  while (el && el.lastElementChild && /^(UL|OL|LI|BLOCKQUOTE|TABLE|THEAD|TBODY|TR|PRE)$/.test(el.tagName)) {
    el = el.lastElementChild;
  }
  return el || root;
}

export async function render(main, { conversationId }, ctx) {
  const state = {
    conversationId,
    libraries: [],
    selected: new Set(),
    controller: null,
  };

  // --- layout -------------------------------------------------------------------------------
  const convList = h("ul", { class: "conv-list", "aria-label": t("history") });
  const sidebar = h(
    "aside",
    { class: "conv-sidebar", id: "conv-sidebar", "aria-label": t("history") },
    h("a", { href: "#/chat", class: "btn btn-primary btn-block new-chat" }, "＋ ", t("new_chat")),
    h("h2", { class: "sidebar-title" }, t("history")),
    convList,
  );
  const messages = h("div", { class: "messages", role: "log", "aria-label": t("history"), "aria-live": "polite", "aria-relevant": "additions" });
  const scroller = h("div", { class: "chat-scroll" }, messages);
  const pickerSummary = h("summary", { class: "btn btn-ghost picker-summary" });
  const pickerList = h("fieldset", { class: "picker-list" }, h("legend", {}, t("libraries_to_ask")));
  const picker = h("details", { class: "library-picker" }, pickerSummary, pickerList);
  const question = h("textarea", {
    class: "composer-input",
    rows: 1,
    placeholder: t("ask_placeholder"),
    "aria-label": t("question"),
    "aria-describedby": "keys-hint",
    maxlength: 4000,
  });
  const sendBtn = h("button", { type: "submit", class: "btn btn-primary composer-send" }, t("send"));
  const composerHint = h("div", { class: "composer-hint", "aria-live": "polite" });
  const composer = h(
    "form",
    { class: "composer" },
    h("div", { class: "composer-row" }, question, sendBtn),
    composerHint,
    h("div", { class: "keys-hint", id: "keys-hint" }, t("keys_hint")),
  );
  const sourcesBody = h("div", { class: "sources-body" }, h("p", { class: "muted" }, t("no_sources")));
  const sourcesPanel = h(
    "aside",
    { class: "sources-panel", id: "sources-panel", "aria-label": t("sources_for") },
    h(
      "div",
      { class: "sources-header" },
      h("h2", {}, t("sources")),
      h("button", { type: "button", class: "icon-btn sources-close", "aria-label": t("close"), on: { click: () => sourcesPanel.classList.remove("open") } }, "✕"),
    ),
    sourcesBody,
  );
  const toggles = h(
    "div",
    { class: "chat-toggles" },
    h("button", { type: "button", class: "btn btn-ghost", "aria-controls": "conv-sidebar", on: { click: () => sidebar.classList.toggle("open") } }, "☰ ", t("show_history")),
    h("button", { type: "button", class: "btn btn-ghost", "aria-controls": "sources-panel", on: { click: () => sourcesPanel.classList.toggle("open") } }, t("show_sources")),
  );
  replace(
    main,
    h(
      "div",
      { class: "chat-layout" },
      sidebar,
      h("section", { class: "chat-main", "aria-label": t("nav_chat") }, h("div", { class: "chat-toolbar" }, toggles, picker), scroller, composer),
      sourcesPanel,
    ),
  );

  // --- libraries ----------------------------------------------------------------------------
  function updatePicker() {
    const total = state.libraries.length;
    const n = state.selected.size;
    pickerSummary.textContent = n === total ? t("libraries_all", { n: total }) : t("libraries_some", { n, total });
    const canAsk = n > 0 && !state.controller;
    sendBtn.disabled = !state.controller && !canAsk;
    composerHint.textContent = total === 0 ? t("no_libraries") : n === 0 ? t("libraries_none_selected") : "";
  }

  function renderPicker() {
    replace(pickerList, h("legend", {}, t("libraries_to_ask")));
    for (const lib of state.libraries) {
      const box = h("input", {
        type: "checkbox",
        value: String(lib.id),
        checked: state.selected.has(lib.id),
        on: {
          change: (e) => {
            if (e.target.checked) state.selected.add(lib.id);
            else state.selected.delete(lib.id);
            if (!state.conversationId) localStorage.setItem(SELECTION_KEY, JSON.stringify([...state.selected]));
            updatePicker();
          },
        },
      });
      pickerList.append(h("label", { class: "check" }, box, h("span", {}, lib.name), lib.description ? h("small", { class: "muted" }, lib.description) : null));
    }
    updatePicker();
  }

  function selectDefault(preferred) {
    const readable = new Set(state.libraries.map((l) => l.id));
    let ids = preferred;
    if (!ids) {
      try {
        ids = JSON.parse(localStorage.getItem(SELECTION_KEY) || "null");
      } catch {
        ids = null;
      }
    }
    const chosen = (ids || []).filter((id) => readable.has(id));
    state.selected = new Set(chosen.length ? chosen : readable);
  }

  // --- conversations ------------------------------------------------------------------------
  async function loadConversations() {
    try {
      const items = await get("/conversations", { limit: 100 });
      replace(convList);
      if (!items.length) convList.append(h("li", { class: "muted empty" }, t("no_conversations")));
      for (const conv of items) convList.append(conversationItem(conv));
    } catch (err) {
      replace(convList, h("li", {}, errorBox(err)));
    }
  }

  function conversationItem(conv) {
    const current = conv.id === state.conversationId;
    return h(
      "li",
      { class: ["conv-item", current && "current"] },
      h(
        "a",
        { href: `#/chat/${conv.id}`, "aria-current": current ? "page" : null, title: conv.title || t("untitled") },
        h("span", { class: "conv-title" }, conv.title || t("untitled")),
        h("small", { class: "muted" }, formatTime(conv.updated_at, locale())),
      ),
      h(
        "div",
        { class: "conv-actions" },
        h("button", { type: "button", class: "icon-btn", "aria-label": `${t("rename")}: ${conv.title}`, title: t("rename"), on: { click: () => renameConversation(conv) } }, "✎"),
        h("button", { type: "button", class: "icon-btn", "aria-label": `${t("delete")}: ${conv.title}`, title: t("delete"), on: { click: () => deleteConversation(conv) } }, "🗑"),
      ),
    );
  }

  async function renameConversation(conv) {
    const title = await openDialog(t("rename_conversation"), (close) => {
      const input = h("input", { value: conv.title, maxlength: 200, required: true, autofocus: true });
      return h(
        "form",
        { on: { submit: (e) => { e.preventDefault(); close(input.value.trim()); } } },
        field(t("title"), input),
        h("div", { class: "dialog-actions" }, h("button", { type: "button", class: "btn", on: { click: () => close() } }, t("cancel")), h("button", { type: "submit", class: "btn btn-primary" }, t("save"))),
      );
    });
    if (!title) return;
    try {
      await patch(`/conversations/${conv.id}`, { title });
      loadConversations();
    } catch (err) {
      notifyError(err);
    }
  }

  async function deleteConversation(conv) {
    if (!(await confirmDialog(t("confirm_delete", { name: conv.title || t("untitled") })))) return;
    try {
      await del(`/conversations/${conv.id}`);
      if (conv.id === state.conversationId) ctx.navigate("#/chat");
      else loadConversations();
    } catch (err) {
      notifyError(err);
    }
  }

  // --- messages -----------------------------------------------------------------------------
  function nearBottom() {
    return scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < NEAR_BOTTOM_PX;
  }

  function scrollToEnd(force = false) {
    if (force || nearBottom()) scroller.scrollTop = scroller.scrollHeight;
  }

  function userBubble(text) {
    return h("article", { class: "msg msg-user" }, h("div", { class: "msg-body" }, text));
  }

  function welcome() {
    return h(
      "div",
      { class: "welcome" },
      h("h1", {}, t("welcome_title")),
      h("p", { class: "muted" }, t("welcome_text")),
    );
  }

  /** An assistant turn: the element and functions to stream into it and to finish it. */
  function assistantTurn(askedQuestion) {
    const status = h("div", { class: "msg-status" });
    const answer = h("div", { class: "answer md" }, h("span", { class: "typing" }, h("span", { class: "spin", "aria-hidden": "true" }), t("thinking")));
    const footer = h("div", { class: "msg-footer" });
    const el = h("article", { class: "msg msg-assistant", "aria-busy": "true" }, status, answer, footer);
    let tail = null;
    let started = false;
    el.addEventListener("click", (e) => {
      const cite = e.target.closest("a[data-cite]");
      if (!cite) return;
      e.preventDefault();
      if (turn.result) showSources(turn.result, Number(cite.dataset.cite), true);
    });
    const turn = {
      el,
      question: askedQuestion,
      result: null,
      token(text) {
        if (!started) {
          started = true;
          replace(answer);
        }
        if (!tail) {
          tail = document.createTextNode("");
          lastBlock(answer).append(tail);
        }
        tail.data += text;
        scrollToEnd();
      },
      html(markup) {
        started = true;
        setSafeHtml(answer, markup);
        tail = null;
        scrollToEnd();
      },
      finish(result) {
        turn.result = result;
        el.removeAttribute("aria-busy");
        el.dataset.messageId = result.message_id ?? result.id ?? "";
        setSafeHtml(answer, result.answer_html);
        renderStatus(status, result);
        replace(footer, sourcesButton(result), feedbackControls(result));
        if (emptyAnswer(result)) {
          status.append(badge(t("empty_answer"), "warn"));
          footer.prepend(h("button", { type: "button", class: "btn btn-small", on: { click: () => retry(turn) } }, t("retry")));
        }
        if (result.sources && result.sources.length) showSources(result, null, false);
      },
      fail(err, { stopped = false } = {}) {
        el.removeAttribute("aria-busy");
        if (!started) replace(answer);
        if (tail) tail = null;
        replace(status);
        replace(footer, errorBox(stopped ? t("stopped") : errorText(err), t("retry"), () => retry(turn)));
        el.classList.add("msg-failed");
      },
    };
    return turn;
  }

  function renderStatus(status, result) {
    replace(status);
    if (result.blocked) status.append(badge(t("blocked"), "danger"));
    else if (result.not_found) status.append(badge(t("not_found"), "info"), h("p", { class: "muted small" }, t("not_found_hint")));
    if (result.flags && result.flags.sources_withheld) status.append(badge(t("sources_withheld"), "warn"));
    if (result.flags && result.flags.fallback === "extractive") status.append(badge(t("quoted_answer"), "info"));
  }

  /** The model stopped without a word (it happens with small models): say so, offer a retry. */
  function emptyAnswer(result) {
    return !result.blocked && !result.not_found && !(result.answer ?? result.content ?? "").trim();
  }

  function sourcesButton(result) {
    const n = (result.sources || []).length;
    if (!n) return null;
    return h("button", { type: "button", class: "btn btn-small btn-ghost", on: { click: () => showSources(result, null, true) } }, t("citations_n", { n }));
  }

  function feedbackControls(result) {
    const messageId = result.message_id ?? result.id;
    const conv = result.conversation_id ?? state.conversationId;
    if (!messageId || !conv || result.blocked) return null;
    const path = `/conversations/${conv}/messages/${messageId}/feedback`;
    let current = result.feedback || null;
    const up = h("button", { type: "button", class: "icon-btn fb", "aria-label": t("helpful"), title: t("helpful") }, "👍");
    const down = h("button", { type: "button", class: "icon-btn fb", "aria-label": t("not_helpful"), title: t("not_helpful") }, "👎");
    const comment = h("textarea", { rows: 2, maxlength: 2000, placeholder: t("feedback_comment"), "aria-label": t("feedback_comment") });
    const send = h("button", { type: "submit", class: "btn btn-small" }, t("feedback_send"));
    const form = h("form", { class: "feedback-form", hidden: true }, comment, send);
    const sync = () => {
      up.setAttribute("aria-pressed", String(current?.rating === 1));
      down.setAttribute("aria-pressed", String(current?.rating === -1));
      if (current) comment.value = current.comment || "";
    };
    const rate = (rating) =>
      busy(rating === 1 ? up : down, async () => {
        if (current && current.rating === rating) {
          await del(path);
          current = null;
          form.hidden = true;
        } else {
          current = await put(path, { rating, comment: comment.value.trim() });
          form.hidden = false;
        }
        result.feedback = current;
        sync();
      });
    up.addEventListener("click", () => rate(1));
    down.addEventListener("click", () => rate(-1));
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      busy(send, async () => {
        current = await put(path, { rating: current?.rating ?? -1, comment: comment.value.trim() });
        result.feedback = current;
        form.hidden = true;
        sync();
        const thanks = h("span", { class: "muted small", role: "status" }, t("feedback_thanks"));
        form.after(thanks);
        setTimeout(() => thanks.remove(), 4000);
      });
    });
    sync();
    return h("div", { class: "feedback" }, up, down, form);
  }

  // --- sources panel ------------------------------------------------------------------------
  function showSources(result, marker, reveal) {
    for (const el of $all(".msg-assistant.active", messages)) el.classList.remove("active");
    const id = String(result.message_id ?? result.id ?? "");
    const owner = id ? messages.querySelector(`.msg-assistant[data-message-id="${CSS.escape(id)}"]`) : null;
    if (owner) owner.classList.add("active");
    const citations = result.citations || [];
    const list = h("ol", { class: "source-list" });
    for (const source of result.sources || []) {
      const cite = citations.find((c) => c.marker === source.marker);
      const snippet = h("blockquote", { class: "snippet" });
      if (cite && cite.snippet_html) setSafeHtml(snippet, cite.snippet_html);
      else snippet.textContent = source.text.length > 600 ? `${source.text.slice(0, 600)}…` : source.text;
      const item = h(
        "li",
        { class: ["source-card", marker === source.marker && "highlight"], id: `source-${id}-${source.marker}`, tabindex: "-1", dataset: { marker: String(source.marker) } },
        h("div", { class: "source-head" }, h("span", { class: "marker" }, `[${source.marker}]`), h("strong", { class: "source-title" }, source.title || source.filename)),
        h("div", { class: "source-meta muted small" }, [source.library_name, pagesLabel(source.page_start, source.page_end), source.filename !== source.title ? source.filename : null].filter(Boolean).join(" · ")),
        source.heading_path && source.heading_path.length ? h("div", { class: "source-path small muted" }, source.heading_path.join(" › ")) : null,
        snippet,
        h("button", { type: "button", class: "btn btn-small", on: { click: () => openSource(source, cite) } }, t("open_source")),
      );
      list.append(item);
    }
    replace(sourcesBody, list.childElementCount ? list : h("p", { class: "muted" }, t("no_sources")));
    if (reveal) sourcesPanel.classList.add("open");
    if (marker !== null) {
      const target = $(`[data-marker="${marker}"]`, list);
      if (target) {
        target.scrollIntoView({ block: "nearest", behavior: "smooth" });
        target.focus({ preventScroll: true });
      }
    }
  }

  // --- asking -------------------------------------------------------------------------------
  function setStreaming(on) {
    state.controller = on ? new AbortController() : null;
    sendBtn.textContent = on ? t("stop") : t("send");
    sendBtn.classList.toggle("btn-danger", on);
    sendBtn.classList.toggle("btn-primary", !on);
    sendBtn.type = on ? "button" : "submit";
    updatePicker();
  }

  async function runTurn(turn) {
    setStreaming(true);
    const signal = state.controller.signal;
    let result = null;
    let failure = null;
    try {
      await streamEvents(
        "/chat",
        { question: turn.question, conversation_id: state.conversationId, library_ids: [...state.selected], stream: true },
        (name, data) => {
          if (name === "token") turn.token(data.text);
          else if (name === "html") turn.html(data.html);
          else if (name === "done") result = data;
          else if (name === "error") failure = new ApiError(503, data.code, data.message);
        },
        signal,
      );
      if (result) {
        turn.finish(result);
        if (!state.conversationId && result.conversation_id) {
          state.conversationId = result.conversation_id;
          ctx.setHash(`#/chat/${result.conversation_id}`);
        }
        loadConversations();
      } else {
        turn.fail(failure || new ApiError(0, "network", t("stopped")));
      }
    } catch (err) {
      if (err.name === "AbortError") turn.fail(null, { stopped: true });
      else turn.fail(err);
    } finally {
      setStreaming(false);
      scrollToEnd();
    }
  }

  function ask(text) {
    const welcomeEl = $(".welcome", messages);
    if (welcomeEl) welcomeEl.remove();
    messages.append(userBubble(text));
    const turn = assistantTurn(text);
    messages.append(turn.el);
    scrollToEnd(true);
    return runTurn(turn);
  }

  function retry(turn) {
    if (state.controller) return;
    const fresh = assistantTurn(turn.question);
    turn.el.replaceWith(fresh.el);
    runTurn(fresh);
  }

  let librariesLoaded;
  const librariesReady = new Promise((resolve) => {
    librariesLoaded = resolve;
  });
  composer.addEventListener("submit", async (e) => {
    e.preventDefault();
    if (state.controller) return;
    await librariesReady; // asked before the libraries arrived: ask once they have
    if (state.controller) return;
    const text = question.value.trim();
    if (!text || !state.selected.size) return;
    question.value = "";
    autosize();
    ask(text);
  });
  sendBtn.addEventListener("click", (e) => {
    if (state.controller) {
      e.preventDefault();
      state.controller.abort();
    }
  });
  question.addEventListener("keydown", (e) => {
    // Enter sends; not while an input method is composing (Chinese, Japanese…).
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing && e.keyCode !== 229) {
      e.preventDefault();
      composer.requestSubmit();
    }
  });
  function autosize() {
    question.style.height = "auto";
    question.style.height = `${Math.min(question.scrollHeight, 200)}px`;
  }
  question.addEventListener("input", autosize);

  // --- load ---------------------------------------------------------------------------------
  loadConversations();
  try {
    state.libraries = await get("/libraries");
  } catch (err) {
    replace(messages, errorBox(err));
    state.libraries = [];
  }
  if (state.conversationId) {
    try {
      const conv = await get(`/conversations/${state.conversationId}`);
      selectDefault(conv.library_ids);
      let lastQuestion = "";
      for (const m of conv.messages) {
        if (m.role === "user") {
          lastQuestion = m.content;
          messages.append(userBubble(m.content));
        } else {
          const turn = assistantTurn(lastQuestion);
          messages.append(turn.el);
          turn.finish({ ...m, conversation_id: conv.id });
        }
      }
      scrollToEnd(true);
    } catch (err) {
      selectDefault(null);
      replace(messages, errorBox(err, t("retry"), () => ctx.refresh()));
    }
  } else {
    selectDefault(null);
    messages.append(welcome());
  }
  renderPicker();
  librariesLoaded();
  question.focus();
  return () => {
    if (state.controller) state.controller.abort();
  };
}
