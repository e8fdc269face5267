// "Open source": the cited document at the cited page — the PDF page as an image beside the
// page's text with the cited passage highlighted — and a download link when the library allows.

import { V1, get } from "./api.js";
import { h, replace } from "./dom.js";
import { addStrings, t } from "./i18n.js";
import { errorBox, openDialog, spinner } from "./ui.js";

addStrings({
  en: {
    viewer_page: "Page {n} of {total}",
    viewer_page_image: "Page {n} of {title}",
    viewer_text: "Text of this page",
    viewer_passage: "Cited passage",
    viewer_download: "Download original",
    viewer_no_download: "Downloads are turned off for this library.",
    viewer_no_text: "No text was extracted from this page.",
    viewer_image_failed: "The page image could not be shown.",
    viewer_page_region: "The page as printed",
  },
  zh: {
    viewer_page: "第 {n} 页，共 {total} 页",
    viewer_page_image: "《{title}》第 {n} 页",
    viewer_text: "本页文字",
    viewer_passage: "引用的段落",
    viewer_download: "下载原文件",
    viewer_no_download: "此知识库不允许下载原文件。",
    viewer_no_text: "未从本页提取到文字。",
    viewer_image_failed: "无法显示该页图像。",
    viewer_page_region: "页面原样",
  },
});

/** `text` as nodes with the first occurrence of `needle` wrapped in <mark>. */
export function highlighted(text, needle) {
  const at = needle ? text.indexOf(needle) : -1;
  if (at < 0) return [text];
  return [text.slice(0, at), h("mark", {}, text.slice(at, at + needle.length)), text.slice(at + needle.length)];
}

function isPdf(doc) {
  return doc.kind === "pdf" || doc.media_type === "application/pdf";
}

/** Open the viewer for a cited source (`source` from an answer, `cite` its citation if any). */
export function openSource(source, cite) {
  const title = source.title || source.filename;
  return openDialog(title, () => {
    const body = h("div", { class: "viewer" }, spinner());
    show(body, source, cite, source.page_start || null);
    return body;
  }, { wide: true });
}

async function show(body, source, cite, page) {
  let doc;
  let lib;
  try {
    [doc, lib] = await Promise.all([get(`/documents/${source.document_id}`), get(`/libraries/${source.library_id}`)]);
  } catch (err) {
    replace(body, errorBox(err));
    return;
  }
  const cited = new Set(source.chunk_ids || [cite?.chunk_id].filter(Boolean));
  const needle = cite?.snippet || "";
  const canDownload = lib.permission === "manage" || lib.allow_download;
  const total = doc.page_count || 0;
  const pageText = h("div", { class: "viewer-text", tabindex: "0", "aria-label": t("viewer_text") });
  const figure = h("div", { class: "viewer-page", tabindex: "0", role: "region", "aria-label": t("viewer_page_region") });
  const pager = h("div", { class: "viewer-pager" });

  async function goTo(n) {
    replace(pager);
    if (n && total) {
      const prev = h("button", { type: "button", class: "btn btn-small", disabled: n <= 1, on: { click: () => goTo(n - 1) } }, "‹ ", t("previous"));
      const next = h("button", { type: "button", class: "btn btn-small", disabled: n >= total, on: { click: () => goTo(n + 1) } }, t("next"), " ›");
      pager.append(prev, h("span", { class: "muted", "aria-live": "polite" }, t("viewer_page", { n, total })), next);
    }
    replace(figure);
    if (n && isPdf(doc)) {
      const img = h("img", {
        src: `${V1}/documents/${doc.id}/pages/${n}`,
        alt: t("viewer_page_image", { n, title: doc.title || doc.filename }),
        class: "page-image",
        loading: "eager",
      });
      img.addEventListener("error", () => replace(figure, h("p", { class: "muted" }, t("viewer_image_failed"))));
      figure.append(img);
    }
    replace(pageText, spinner());
    try {
      const chunks = await get(`/documents/${doc.id}/chunks`, n ? { page: n } : undefined);
      const shown = n ? chunks : chunks.filter((c) => cited.has(c.id));
      replace(pageText);
      if (!shown.length) pageText.append(h("p", { class: "muted" }, t("viewer_no_text")));
      for (const chunk of shown) {
        const isCited = cited.has(chunk.id);
        pageText.append(
          h(
            "section",
            { class: ["chunk", isCited && "chunk-cited"], "aria-label": isCited ? t("viewer_passage") : null },
            chunk.heading_path.length ? h("div", { class: "small muted" }, chunk.heading_path.join(" › ")) : null,
            h("p", { class: "chunk-text" }, isCited ? highlighted(chunk.text, needle) : chunk.text),
          ),
        );
      }
      const mark = pageText.querySelector("mark") || pageText.querySelector(".chunk-cited");
      if (mark) mark.scrollIntoView({ block: "center" });
    } catch (err) {
      replace(pageText, errorBox(err));
    }
  }

  replace(
    body,
    h(
      "div",
      { class: "viewer-bar" },
      h("div", { class: "muted small" }, [lib.name, doc.folder ? `${doc.folder}/${doc.filename}` : doc.filename].join(" · ")),
      pager,
      canDownload
        ? h("a", { class: "btn btn-small", href: `${V1}/documents/${doc.id}/file`, download: doc.filename }, "⬇ ", t("viewer_download"))
        : h("span", { class: "muted small" }, t("viewer_no_download")),
    ),
    h("div", { class: ["viewer-columns", !isPdf(doc) && "text-only"] }, figure, pageText),
  );
  goTo(page);
}
