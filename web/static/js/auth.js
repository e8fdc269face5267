// Sign-in and password change screens.

import { get, post } from "./api.js";
import { field, h, replace } from "./dom.js";
import { LANGS, addStrings, lang, setLang, t } from "./i18n.js";
import { errorBox, notify } from "./ui.js";

addStrings({
  en: {
    sign_in_title: "Sign in to Zhiku",
    sign_in_intro: "Your organisation's knowledge base. Answers cite the documents they rest on.",
    username: "Username",
    password: "Password",
    sign_in: "Sign in",
    signing_in: "Signing in…",
    wrong_password: "Wrong username or password.",
    pw_title: "Change your password",
    pw_forced: "Choose a new password before you continue.",
    pw_current: "Current password",
    pw_new: "New password",
    pw_repeat: "New password again",
    pw_rules: "At least 12 characters; not your username and not a common password.",
    pw_mismatch: "The two new passwords differ.",
    pw_changed: "Password changed.",
  },
  zh: {
    sign_in_title: "登录知库",
    sign_in_intro: "企业知识库。每个回答都会注明所依据的文档。",
    username: "用户名",
    password: "密码",
    sign_in: "登录",
    signing_in: "正在登录…",
    wrong_password: "用户名或密码错误。",
    pw_title: "修改密码",
    pw_forced: "请先设置新密码再继续。",
    pw_current: "当前密码",
    pw_new: "新密码",
    pw_repeat: "再次输入新密码",
    pw_rules: "至少 12 个字符，不能与用户名相同，也不能是常见密码。",
    pw_mismatch: "两次输入的新密码不一致。",
    pw_changed: "密码已修改。",
  },
});

function langSwitch() {
  const select = h(
    "select",
    { class: "lang-select", "aria-label": t("language"), on: { change: (e) => setLang(e.target.value) } },
    Object.entries(LANGS).map(([code, label]) => h("option", { value: code, selected: code === lang() }, label)),
  );
  return select;
}
export { langSwitch };

/** The sign-in screen; calls onSignedIn(user) after a successful sign-in. */
export function renderLogin(root, onSignedIn) {
  const username = h("input", { name: "username", autocomplete: "username", required: true, autofocus: true });
  const password = h("input", { name: "password", type: "password", autocomplete: "current-password", required: true });
  const message = h("div", { class: "form-message", "aria-live": "assertive" });
  const submit = h("button", { type: "submit", class: "btn btn-primary btn-block" }, t("sign_in"));
  const form = h(
    "form",
    {
      class: "login-form",
      on: {
        submit: async (e) => {
          e.preventDefault();
          submit.disabled = true;
          submit.textContent = t("signing_in");
          replace(message);
          try {
            const out = await post("/auth/session", { username: username.value.trim(), password: password.value });
            onSignedIn(out.user);
          } catch (err) {
            password.value = "";
            replace(message, errorBox(err.status === 401 ? t("wrong_password") : err));
            password.focus();
          } finally {
            submit.disabled = false;
            submit.textContent = t("sign_in");
          }
        },
      },
    },
    field(t("username"), username),
    field(t("password"), password),
    message,
    submit,
  );
  replace(
    root,
    h(
      "main",
      { id: "main", class: "login-page" },
      h(
        "div",
        { class: "login-card" },
        h("div", { class: "login-brand" }, h("span", { class: "logo-mark", "aria-hidden": "true" }, "知"), h("span", {}, "Zhiku · 知库")),
        h("h1", {}, t("sign_in_title")),
        h("p", { class: "muted" }, t("sign_in_intro")),
        form,
        h("div", { class: "login-footer" }, langSwitch()),
      ),
    ),
  );
}

/** Change one's own password; `forced` when the account must change it before anything else. */
export function passwordForm(forced, onDone) {
  const current = h("input", { type: "password", autocomplete: "current-password", required: true, autofocus: true });
  const next = h("input", { type: "password", autocomplete: "new-password", required: true, minlength: 12 });
  const repeat = h("input", { type: "password", autocomplete: "new-password", required: true, minlength: 12 });
  const message = h("div", { class: "form-message", "aria-live": "assertive" });
  const submit = h("button", { type: "submit", class: "btn btn-primary" }, t("save"));
  return h(
    "form",
    {
      class: "stack narrow",
      on: {
        submit: async (e) => {
          e.preventDefault();
          replace(message);
          if (next.value !== repeat.value) {
            replace(message, errorBox(t("pw_mismatch")));
            return;
          }
          submit.disabled = true;
          try {
            await post("/auth/password", { current_password: current.value, new_password: next.value });
            notify(t("pw_changed"));
            onDone(await get("/auth/me"));
          } catch (err) {
            replace(message, errorBox(err));
          } finally {
            submit.disabled = false;
          }
        },
      },
    },
    forced ? h("p", { class: "callout" }, t("pw_forced")) : null,
    field(t("pw_current"), current),
    field(t("pw_new"), next, t("pw_rules")),
    field(t("pw_repeat"), repeat),
    message,
    submit,
  );
}
