// DOM helpers. Text from documents, users or the model only ever reaches the page as text
// nodes; the one way to insert markup is setSafeHtml, for the API's server-escaped *_html
// fields (answer_html, snippet_html, text_html).

/**
 * Create an element. `attrs`: `class`, `dataset` (object), `on` (event → handler), boolean
 * and string attributes; children: nodes, strings (as text), arrays, null/false (skipped).
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "on") {
      for (const [event, handler] of Object.entries(value)) el.addEventListener(event, handler);
    } else if (name === "dataset") {
      Object.assign(el.dataset, value);
    } else if (name === "class") {
      el.className = Array.isArray(value) ? value.filter(Boolean).join(" ") : value;
    } else if (name === "value" || name === "checked" || name === "selected" || name === "indeterminate") {
      el[name] = value;
    } else if (name === "style" || name === "innerHTML" || name.startsWith("on")) {
      throw new Error(`h(): ${name} is not allowed`);
    } else {
      el.setAttribute(name, value === true ? "" : String(value));
    }
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** Replace an element's content. */
export function replace(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

/** Markup the server escaped (an API `*_html` field) — never anything else. */
export function setSafeHtml(el, serverEscapedHtml) {
  el.innerHTML = serverEscapedHtml || "";
  return el;
}

export function $(selector, root = document) {
  return root.querySelector(selector);
}

export function $all(selector, root = document) {
  return Array.from(root.querySelectorAll(selector));
}

let idCounter = 0;
export function uid(prefix = "zk") {
  idCounter += 1;
  return `${prefix}-${idCounter}`;
}

/** A labelled form field: <label> + control, wired with for/id. */
export function field(label, control, hint) {
  control.id = control.id || uid("f");
  const hintEl = hint ? h("small", { class: "hint", id: uid("hint") }, hint) : null;
  if (hintEl) control.setAttribute("aria-describedby", hintEl.id);
  return h("div", { class: "field" }, h("label", { for: control.id }, label), control, hintEl);
}

export function formatBytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  let v = Number(n);
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i += 1;
  }
  return `${v < 10 && i ? v.toFixed(1) : Math.round(v)} ${units[i]}`;
}

export function formatTime(iso, locale) {
  if (!iso) return "–";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  return d.toLocaleString(locale, { dateStyle: "medium", timeStyle: "short" });
}

/** Focus the first focusable element inside `root` (after a screen change), unless the
 * person already moved focus into it (typing while the screen loaded). */
export function focusFirst(root) {
  const active = document.activeElement;
  if (active && active !== root && root.contains(active)) return;
  const el = ["[autofocus]", "h1", "h2", "input, textarea, button, a[href]"].map((s) => root.querySelector(s)).find(Boolean);
  if (el) {
    if (!el.hasAttribute("tabindex") && /^H[12]$/.test(el.tagName)) el.setAttribute("tabindex", "-1");
    el.focus({ preventScroll: true });
  }
}
