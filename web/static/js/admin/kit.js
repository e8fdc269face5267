// Small helpers shared by the management screens (users, departments, API keys, audit log,
// feedback, system status): a page heading, a form in a dialog that keeps server errors in
// view, a table that turns into cards on a phone, copying to the clipboard, temporary passwords.

import { h, replace, uid } from "../dom.js";
import { addStrings, t } from "../i18n.js";
import { errorBox, openDialog } from "../ui.js";

addStrings({
  en: {
    ak_admins_only: "Only administrators can use this screen.",
    ak_managers_only: "Only administrators and librarians can use this screen.",
    ak_copy: "Copy",
    ak_copied: "Copied to the clipboard",
    ak_copy_manual: "Copying is not available here: the text is selected — press Ctrl+C (⌘C) to copy it.",
    ak_generate: "Generate",
    ak_generate_label: "Generate a random password",
    ak_never: "Never",
    ak_unknown_user: "user #{id}",
  },
  zh: {
    ak_admins_only: "只有管理员可以使用此页面。",
    ak_managers_only: "只有管理员和知识库管理员可以使用此页面。",
    ak_copy: "复制",
    ak_copied: "已复制到剪贴板",
    ak_copy_manual: "此处无法自动复制：文本已选中，请按 Ctrl+C（⌘C）复制。",
    ak_generate: "生成",
    ak_generate_label: "生成随机密码",
    ak_never: "从未",
    ak_unknown_user: "用户 #{id}",
  },
});

/** The screen's heading with its main actions on the right. */
export function pageHead(title, ...actions) {
  return h("div", { class: "row-between adm-head" }, h("h1", {}, title), h("div", { class: "row" }, actions));
}

/** Render a refusal into `content` when the signed-in user is not an admin; returns true then. */
export function refuseUnlessAdmin(content, ctx, title) {
  if (ctx.isAdmin) return false;
  replace(content, h("h1", {}, title), errorBox(t("ak_admins_only")));
  return true;
}

/**
 * A form in a modal dialog. `build()` returns the fields; `submit()` does the work and returns
 * what the dialog resolves to. A refusal from the server stays in the dialog (with the fields
 * as typed) so the person can correct it; resolves undefined when cancelled.
 */
export function formDialog(title, build, submit, { submitLabel = t("save"), danger = false } = {}) {
  return openDialog(title, (close) => {
    const message = h("div", { class: "form-message", "aria-live": "assertive" });
    const submitBtn = h("button", { type: "submit", class: ["btn", danger ? "btn-danger" : "btn-primary"] }, submitLabel);
    const form = h(
      "form",
      {
        class: "adm-form",
        on: {
          submit: async (e) => {
            e.preventDefault();
            replace(message);
            submitBtn.disabled = true;
            submitBtn.setAttribute("aria-busy", "true");
            try {
              const result = await submit();
              close(result === undefined ? true : result);
            } catch (err) {
              if (err && err.name === "AbortError") return;
              replace(message, errorBox(err));
              const box = message.querySelector(".error-box");
              if (box) box.scrollIntoView({ block: "nearest" });
            } finally {
              submitBtn.disabled = false;
              submitBtn.removeAttribute("aria-busy");
            }
          },
        },
      },
      build(),
      message,
      h(
        "div",
        { class: "dialog-actions" },
        h("button", { type: "button", class: "btn", on: { click: () => close() } }, t("cancel")),
        submitBtn,
      ),
    );
    return form;
  });
}

/** A client-side refusal shown like a server one (thrown from a formDialog submit). */
export function invalid(message) {
  const err = new Error(message);
  err.code = "invalid_request";
  err.status = 422;
  return err;
}

/**
 * A data table whose rows become labelled cards on narrow screens. `columns`:
 * [[header, cell(row) → node|string, {num, wrap, nowrap}]]; `rowClass(row)` optional.
 */
export function cardTable(columns, rows, { caption, empty, rowClass } = {}) {
  if (!rows.length) return h("p", { class: "muted adm-empty" }, empty || t("none"));
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      { class: "data data-cards" },
      caption ? h("caption", { class: "sr-only" }, caption) : null,
      h("thead", {}, h("tr", {}, columns.map(([head, , opts]) => h("th", { scope: "col", class: opts?.num ? "num" : null }, head)))),
      h(
        "tbody",
        {},
        rows.map((row) =>
          h(
            "tr",
            { class: rowClass ? rowClass(row) : null },
            columns.map(([head, cell, opts]) =>
              h(
                "td",
                { class: [opts?.num && "num", opts?.wrap && "cell-wrap", opts?.nowrap && "nowrap"], "data-label": head },
                // one element per cell: on a phone the cell is a two-column grid (label, value)
                h("div", { class: "cell" }, cell(row)),
              ),
            ),
          ),
        ),
      ),
    ),
  );
}

/** Copy `text`; when the clipboard is not available (plain http), select `fallbackEl`'s text. */
export async function copyText(text, fallbackEl) {
  try {
    if (!navigator.clipboard || !window.isSecureContext) throw new Error("no clipboard");
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    if (fallbackEl) {
      if (typeof fallbackEl.select === "function") {
        fallbackEl.focus();
        fallbackEl.select();
      } else {
        const range = document.createRange();
        range.selectNodeContents(fallbackEl);
        const sel = window.getSelection();
        sel.removeAllRanges();
        sel.addRange(range);
      }
    }
    return false;
  }
}

/** A random temporary password (16 characters, no look-alikes), from the browser's CSPRNG. */
function temporaryPassword(length = 16) {
  const alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789-_.";
  const out = [];
  const bytes = new Uint8Array(length * 2);
  while (out.length < length) {
    crypto.getRandomValues(bytes);
    for (const b of bytes) {
      // reject the top of the byte range so every character is equally likely
      if (b < 256 - (256 % alphabet.length) && out.length < length) out.push(alphabet[b % alphabet.length]);
    }
  }
  return out.join("");
}

/** A text input for a temporary password with a button that fills in a random one. */
export function passwordInput() {
  const input = h("input", {
    type: "text",
    required: true,
    minlength: 12,
    maxlength: 1024,
    autocomplete: "new-password",
    spellcheck: "false",
    autocapitalize: "off",
    class: "mono grow",
  });
  const gen = h(
    "button",
    {
      type: "button",
      class: "btn",
      "aria-label": t("ak_generate_label"),
      on: {
        click: () => {
          input.value = temporaryPassword();
          input.focus();
          input.select();
        },
      },
    },
    t("ak_generate"),
  );
  return { input, row: h("div", { class: "input-row" }, input, gen) };
}

/** A <div class="field"> whose control is a composite (input + button): the label names the input. */
export function fieldFor(label, input, composite, hint) {
  input.id = input.id || uid("f");
  const hintEl = hint ? h("small", { class: "hint", id: uid("hint") }, hint) : null;
  if (hintEl) input.setAttribute("aria-describedby", hintEl.id);
  return h("div", { class: "field" }, h("label", { for: input.id }, label), composite, hintEl);
}

/** A map id → user (from GET /users), and a label for an id that may be missing. */
export function userMap(users) {
  return new Map((users || []).map((u) => [u.id, u]));
}

export function userLabel(map, id) {
  if (id === null || id === undefined) return "–";
  const user = map.get(id);
  return user ? user.username : t("ak_unknown_user", { id });
}
