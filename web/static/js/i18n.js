// UI text in Chinese and English. Each screen registers its own strings with addStrings();
// t(key, vars) looks one up in the current language (English when a key has no translation).

export const LANGS = { zh: "中文", en: "English" };
const STORAGE_KEY = "zhiku.lang";
const strings = { zh: {}, en: {} };

function detect() {
  const saved = localStorage.getItem(STORAGE_KEY);
  if (saved && saved in LANGS) return saved;
  for (const lang of navigator.languages || [navigator.language || "en"]) {
    const base = String(lang).toLowerCase().split("-")[0];
    if (base in LANGS) return base;
  }
  return "en";
}

let current = detect();

export function lang() {
  return current;
}

/** The locale for dates and numbers. */
export function locale() {
  return current === "zh" ? "zh-CN" : "en";
}

export function setLang(next) {
  if (!(next in LANGS) || next === current) return;
  current = next;
  localStorage.setItem(STORAGE_KEY, next);
  document.documentElement.lang = locale();
  window.dispatchEvent(new CustomEvent("zhiku:lang"));
}

export function addStrings(table) {
  for (const l of Object.keys(LANGS)) Object.assign(strings[l], table[l] || {});
}

export function t(key, vars) {
  let s = strings[current][key] ?? strings.en[key] ?? key;
  if (vars) s = s.replace(/\{(\w+)\}/g, (m, name) => (name in vars ? String(vars[name]) : m));
  return s;
}

document.documentElement.lang = locale();

addStrings({
  en: {
    app_name: "Zhiku",
    skip: "Skip to content",
    nav_chat: "Ask",
    nav_admin: "Manage",
    nav_account: "Account",
    sign_out: "Sign out",
    language: "Language",
    loading: "Loading…",
    save: "Save",
    cancel: "Cancel",
    close: "Close",
    delete: "Delete",
    rename: "Rename",
    create: "Create",
    add: "Add",
    retry: "Retry",
    confirm_delete: "Delete “{name}”? This cannot be undone.",
    error_generic: "Something went wrong: {message}",
    saved: "Saved",
    none: "None",
    yes: "Yes",
    no: "No",
    previous: "Previous",
    next: "Next",
    search: "Search",
    all: "All",
    actions: "Actions",
    name: "Name",
    description: "Description",
    created: "Created",
    status: "Status",
    rate_limited: "Too many requests; wait {seconds} s and try again.",
  },
  zh: {
    app_name: "知库",
    skip: "跳到正文",
    nav_chat: "问答",
    nav_admin: "管理",
    nav_account: "账户",
    sign_out: "退出登录",
    language: "语言",
    loading: "加载中…",
    save: "保存",
    cancel: "取消",
    close: "关闭",
    delete: "删除",
    rename: "重命名",
    create: "创建",
    add: "添加",
    retry: "重试",
    confirm_delete: "删除“{name}”？此操作无法撤销。",
    error_generic: "出错了：{message}",
    saved: "已保存",
    none: "无",
    yes: "是",
    no: "否",
    previous: "上一页",
    next: "下一页",
    search: "搜索",
    all: "全部",
    actions: "操作",
    name: "名称",
    description: "描述",
    created: "创建时间",
    status: "状态",
    rate_limited: "请求过于频繁，请在 {seconds} 秒后重试。",
  },
});
