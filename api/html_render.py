"""Safe HTML for the API's `*_html` fields, so that no client ever puts document or model text
into a page raw.

`markdown_html` renders an answer's Markdown (headings, lists, tables, code, emphasis, links)
with raw HTML escaped, images shown as text (nothing loads from outside hosts), links only to
http/https/mailto (opening in a new tab, no referrer), and `[n]` citation markers turned into
links to the cited source. `highlight_html` escapes passage text and marks a span in it.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from functools import lru_cache

from markdown_it import MarkdownIt
from markdown_it.renderer import RendererHTML
from markdown_it.rules_core import StateCore
from markdown_it.token import Token
from markdown_it.utils import EnvType, OptionsDict

ALLOWED_SCHEMES = ("http://", "https://", "mailto:")
LINK_REL = "noopener noreferrer nofollow"
CITE_RE = re.compile(r"\[([1-9][0-9]{0,2})\]")
ELLIPSIS = "…"
SNIPPET_CONTEXT_CHARS = 120  # of the source's text kept either side of a citation's snippet


def _cites(state: StateCore) -> None:
    """Core rule (after inline parsing): `[n]` (a plain number) in text outside links and code
    becomes a citation token. Done on text tokens, not as an inline rule, so that a marker
    inside a link's text neither nests a link nor breaks the outer one."""
    for block in state.tokens:
        if block.type != "inline" or not block.children:
            continue
        out: list[Token] = []
        in_link = 0
        for token in block.children:
            if token.type == "link_open":
                in_link += 1
            elif token.type == "link_close":
                in_link -= 1
            if token.type != "text" or in_link or not CITE_RE.search(token.content):
                out.append(token)
                continue
            pos = 0
            for match in CITE_RE.finditer(token.content):
                if match.start() > pos:
                    out.append(_text(token.content[pos : match.start()], token.level))
                cite = Token("cite", "sup", 0, content=match.group(0), level=token.level)
                cite.meta = {"n": int(match.group(1))}
                out.append(cite)
                pos = match.end()
            if pos < len(token.content):
                out.append(_text(token.content[pos:], token.level))
        block.children = out


def _text(content: str, level: int) -> Token:
    return Token("text", "", 0, content=content, level=level)


def _plain(tokens: Sequence[Token] | None) -> str:
    """The text of inline tokens with the markup stripped (for an image's alt)."""
    parts: list[str] = []
    for t in tokens or ():
        if t.type in ("text", "code_inline", "cite"):
            parts.append(t.content)
        elif t.type in ("softbreak", "hardbreak"):
            parts.append(" ")
        elif t.children:
            parts.append(_plain(t.children))
    return "".join(parts)


class SafeRenderer(RendererHTML):
    def cite(self, tokens: Sequence[Token], idx: int, options: OptionsDict, env: EnvType) -> str:
        n = int(tokens[idx].meta["n"])
        return f'<sup class="cite"><a href="#source-{n}" data-cite="{n}">[{n}]</a></sup>'

    def image(self, tokens: Sequence[Token], idx: int, options: OptionsDict, env: EnvType) -> str:
        """No <img>: the alt text and the address, as text."""
        token = tokens[idx]
        alt = _plain(token.children).strip()
        src = str(token.attrGet("src") or "")
        text = f"{alt} ({src})" if alt and src else alt or src
        return html.escape(text, quote=False)

    def link_open(
        self, tokens: Sequence[Token], idx: int, options: OptionsDict, env: EnvType
    ) -> str:
        token = tokens[idx]
        token.attrSet("rel", LINK_REL)
        token.attrSet("target", "_blank")
        return self.renderToken(tokens, idx, options, env)

    def _aligned(
        self, tokens: Sequence[Token], idx: int, options: OptionsDict, env: EnvType
    ) -> str:
        # A column's alignment as a class: our CSP forbids inline style attributes.
        token = tokens[idx]
        style = str(token.attrs.pop("style", "") or "")
        if style.startswith("text-align:"):
            token.attrSet("class", "align-" + style.split(":", 1)[1].strip())
        return self.renderToken(tokens, idx, options, env)

    def th_open(self, tokens: Sequence[Token], idx: int, options: OptionsDict, env: EnvType) -> str:
        return self._aligned(tokens, idx, options, env)

    def td_open(self, tokens: Sequence[Token], idx: int, options: OptionsDict, env: EnvType) -> str:
        return self._aligned(tokens, idx, options, env)


class SafeMarkdown(MarkdownIt):
    def validateLink(self, url: str) -> bool:
        return url.strip().lower().startswith(ALLOWED_SCHEMES)


@lru_cache(maxsize=1)
def _parser() -> SafeMarkdown:
    md = SafeMarkdown(
        "commonmark",
        {"html": False, "breaks": True, "linkify": False, "typographer": False},
        renderer_cls=SafeRenderer,
    )
    md.enable(["table", "strikethrough"])
    md.core.ruler.before("text_join", "cite", _cites)  # so that an escaped \[1\] stays text
    return md


def markdown_html(text: str) -> str:
    """An answer's Markdown as safe HTML (see the module's doc)."""
    if not text:
        return ""
    return _parser().render(text)


def highlight_html(text: str, span: tuple[int, int] | None, *, context: int | None = None) -> str:
    """`text` escaped, with `text[start:end]` wrapped in <mark>. With `context`, only the span
    and up to that many characters either side are kept (cut ends shown as "…")."""
    n = len(text)
    start, end = span if span is not None else (0, 0)
    start, end = max(0, min(start, n)), max(0, min(end, n))
    if start >= end:
        if context is not None and n > 2 * context:
            return html.escape(text[: 2 * context]) + ELLIPSIS
        return html.escape(text)
    lo, hi = 0, n
    if context is not None:
        lo, hi = max(0, start - context), min(n, end + context)
    return "".join(
        (
            ELLIPSIS if lo > 0 else "",
            html.escape(text[lo:start]),
            "<mark>",
            html.escape(text[start:end]),
            "</mark>",
            html.escape(text[end:hi]),
            ELLIPSIS if hi < n else "",
        )
    )


def text_html(text: str) -> str:
    """Plain text escaped for HTML (no Markdown)."""
    return html.escape(text)


def citation_snippet_html(citation: dict[str, object], sources: Sequence[dict[str, object]]) -> str:
    """`snippet_html` for a stored citation (a `CitationOut` as a dict): its span highlighted in
    the text of the source with the same marker, else the snippet alone, marked."""
    snippet = str(citation.get("snippet") or "")
    start, end = citation.get("snippet_start"), citation.get("snippet_end")
    source = next((s for s in sources if s.get("marker") == citation.get("marker")), None)
    text = str(source.get("text") or "") if source else ""
    if isinstance(start, int) and isinstance(end, int) and text[start:end] == snippet and snippet:
        return highlight_html(text, (start, end), context=SNIPPET_CONTEXT_CHARS)
    return highlight_html(snippet, (0, len(snippet)))
