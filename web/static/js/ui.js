// Shared widgets: notices, dialogs, error text, buttons that show they are busy.

import { $, h, replace, uid } from "./dom.js";
import { addStrings, t } from "./i18n.js";

addStrings({
  en: {
    err_network: "The server cannot be reached. Check your connection and try again.",
    err_unauthorized: "Your session has ended. Sign in again.",
    err_forbidden: "You are not allowed to do this.",
    err_not_found: "Not found — it may have been deleted, or you no longer have access.",
    err_model_unavailable: "The language model is not available right now. Try again in a moment.",
    err_account_locked: "Too many failed sign-ins. Try again in {minutes} minutes or ask an administrator to unlock the account.",
    err_conflict: "This conflicts with something that already exists: {message}",
    err_too_large: "The file is too large: {message}",
    err_unavailable: "The service is not available right now: {message}",
  },
  zh: {
    err_network: "无法连接服务器，请检查网络后重试。",
    err_unauthorized: "登录已失效，请重新登录。",
    err_forbidden: "您没有执行此操作的权限。",
    err_not_found: "未找到——可能已被删除，或您已无权访问。",
    err_model_unavailable: "语言模型暂时不可用，请稍后重试。",
    err_account_locked: "登录失败次数过多。请 {minutes} 分钟后重试，或请管理员解锁账户。",
    err_conflict: "与已有内容冲突：{message}",
    err_too_large: "文件过大：{message}",
    err_unavailable: "服务暂时不可用：{message}",
  },
});

/** A person-readable, localized sentence for an API error. */
export function errorText(err) {
  if (!err) return "";
  const message = err.message || String(err);
  switch (err.code) {
    case "network":
      return t("err_network");
    case "model_unavailable":
      return t("err_model_unavailable");
    case "account_locked":
      return t("err_account_locked", { minutes: Math.max(1, Math.ceil(Number(err.retryAfter || 60) / 60)) });
    case "rate_limited":
      return t("rate_limited", { seconds: err.retryAfter || 60 });
    default:
      break;
  }
  switch (err.status) {
    case 401:
      return err.code === "unauthorized" || err.code === "session_expired" ? t("err_unauthorized") : message;
    case 403:
      return message || t("err_forbidden");
    case 404:
      return t("err_not_found");
    case 409:
      return t("err_conflict", { message });
    case 413:
      return t("err_too_large", { message });
    case 503:
      return t("err_unavailable", { message });
    default:
      return message;
  }
}

/** A short notice at the bottom of the screen (announced to screen readers). */
export function notify(message, kind = "info") {
  let area = $("#notices");
  if (!area) {
    area = h("div", { id: "notices", class: "notices", role: "status", "aria-live": "polite" });
    document.body.append(area);
  }
  const note = h("div", { class: ["notice", `notice-${kind}`] }, message);
  area.append(note);
  setTimeout(() => note.remove(), kind === "error" ? 8000 : 4000);
}

export function notifyError(err) {
  notify(errorText(err), "error");
}

/** An inline error box (role=alert) with an optional action button. */
export function errorBox(err, actionLabel, action) {
  return h(
    "div",
    { class: "error-box", role: "alert" },
    h("span", {}, typeof err === "string" ? err : errorText(err)),
    action ? h("button", { type: "button", class: "btn btn-small", on: { click: action } }, actionLabel) : null,
  );
}

/**
 * A modal <dialog> (focus is trapped by the browser, Esc closes it). `build(close)` returns the
 * body; resolves with what `close(value)` was given (undefined on Esc / close button).
 */
export function openDialog(title, build, { wide = false } = {}) {
  return new Promise((resolve) => {
    const titleEl = h("h2", { class: "dialog-title" }, title);
    titleEl.id = uid("dlg");
    const dialog = h("dialog", { class: ["dialog", wide && "dialog-wide"], "aria-labelledby": titleEl.id });
    let result;
    const close = (value) => {
      result = value;
      dialog.close();
    };
    dialog.addEventListener("close", () => {
      dialog.remove();
      resolve(result);
    });
    const header = h(
      "div",
      { class: "dialog-header" },
      titleEl,
      h("button", { type: "button", class: "icon-btn", "aria-label": t("close"), on: { click: () => close() } }, "✕"),
    );
    dialog.append(header, h("div", { class: "dialog-body" }, build(close)));
    document.body.append(dialog);
    dialog.showModal();
  });
}

export function confirmDialog(message, confirmLabel = t("delete")) {
  return openDialog(t("confirm"), (close) =>
    h(
      "div",
      {},
      h("p", {}, message),
      h(
        "div",
        { class: "dialog-actions" },
        h("button", { type: "button", class: "btn", on: { click: () => close(false) } }, t("cancel")),
        h("button", { type: "button", class: "btn btn-danger", autofocus: true, on: { click: () => close(true) } }, confirmLabel),
      ),
    ),
  ).then(Boolean);
}
addStrings({
  en: {
    confirm: "Please confirm",
  },
  zh: {
    confirm: "请确认",
  },
});

/** Run `fn` with the button disabled and marked busy; errors become a notice. */
export async function busy(button, fn) {
  button.disabled = true;
  button.setAttribute("aria-busy", "true");
  try {
    return await fn();
  } catch (err) {
    if (err && err.name !== "AbortError") notifyError(err);
    return undefined;
  } finally {
    button.disabled = false;
    button.removeAttribute("aria-busy");
  }
}

export function spinner(label = t("loading")) {
  return h("div", { class: "loading", role: "status" }, h("span", { class: "spin", "aria-hidden": "true" }), label);
}

/** Replace `el`'s content with a loading state, then with `render(await load())` or an error. */
export async function load(el, loader, render) {
  replace(el, spinner());
  try {
    const data = await loader();
    replace(el, render(data));
  } catch (err) {
    replace(el, errorBox(err, t("retry"), () => load(el, loader, render)));
  }
}

export function badge(text, kind = "neutral") {
  return h("span", { class: ["badge", `badge-${kind}`] }, text);
}
