"""Safe HTML for answers and snippets: XSS payloads come out inert (only allowed tags, no event
handlers, no script/data/vbscript links, no images), Markdown still renders, [n] links to its
source, and highlighted passages are escaped."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest

from api.html_render import (
    citation_snippet_html,
    highlight_html,
    markdown_html,
    text_html,
)

ALLOWED_TAGS = {
    "p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "li", "blockquote",
    "pre", "code", "em", "strong", "s", "a", "table", "thead", "tbody", "tr", "th", "td",
    "sup", "mark",
}  # fmt: skip
ALLOWED_ATTRS = {"href", "rel", "target", "title", "class", "data-cite", "start"}


class Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.markup: list[str] = []  # each start tag as written
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self.markup.append(self.get_starttag_text() or "")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)

    def handle_comment(self, data: str) -> None:
        raise AssertionError(f"comment in output: {data}")

    def handle_pi(self, data: str) -> None:
        raise AssertionError(f"processing instruction in output: {data}")

    def unknown_decl(self, data: str) -> None:
        raise AssertionError(f"declaration in output: {data}")

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(html: str) -> Collector:
    c = Collector()
    c.feed(html)
    c.close()
    return c


def assert_safe(html: str) -> Collector:
    """Only allowed tags and attributes, no event handler, links only to safe places. Payload
    text may survive as escaped text ("onerror=" between tags is harmless), never as markup."""
    lowered = html.lower()
    for bad in ("<script", "<img", "<svg", "<iframe", "<object", "<style", "<!--"):
        assert bad not in lowered, (bad, html)
    c = parse(html)
    for markup in c.markup:
        assert "onerror" not in markup.lower() and "javascript:" not in markup.lower(), markup
    for tag, attrs in c.tags:
        assert tag in ALLOWED_TAGS, (tag, html)
        for name, value in attrs.items():
            assert not name.startswith("on"), (name, html)
            assert name in ALLOWED_ATTRS, (name, html)
            if name == "href":
                assert value is not None
                assert value.startswith(("http://", "https://", "mailto:", "#source-")), html
            if name == "class":
                assert value is not None and "style" not in value
    return c


XSS = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    "![x](http://evil.example/a.png)",
    "![x](data:image/png;base64,iVBORw0KGgo=)",
    "[click](javascript:alert(1))",
    "[click](JaVaScRiPt:alert(1))",
    "[click](&#106;avascript:alert(1))",
    "[click](  javascript:alert(1)  )",
    "[click](vbscript:msgbox(1))",
    "[click](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
    "<javascript:alert(1)>",
    "[x]: javascript:alert(1)\n\n[x]",
    '<a href="http://x" onclick="alert(1)">x</a>',
    '<a href="http://x" onclick=alert(1)>x</a>',
    '"><svg onload=alert(1)>',
    '# "><svg onload=alert(1)>',
    '[ok](http://a.example "x\\" onmouseover=\\"alert(1)")',
    "<iframe src=http://evil.example></iframe>",
    "<style>body{display:none}</style>",
    "`<script>alert(1)</script>`",
    "```html\n<script>alert(1)</script>\n```",
    "| <b onmouseover=alert(1)>a</b> |\n|---|\n| <img src=x> |",
    "<details open ontoggle=alert(1)>",
    "Text <!-- comment --> <?php ?> <![CDATA[x]]>",
]


@pytest.mark.parametrize("payload", XSS)
def test_payloads_come_out_inert(payload: str) -> None:
    assert_safe(markdown_html(payload))


def test_raw_html_is_shown_as_text() -> None:
    out = markdown_html("<script>alert(1)</script>")
    assert "&lt;script&gt;" in out
    assert "<script>alert(1)</script>" in "".join(parse(out).text)
    c = assert_safe(markdown_html("<img src=x onerror=alert(1)>"))
    assert [t for t, _ in c.tags] == ["p"]


def test_images_are_text_not_img() -> None:
    out = markdown_html("![diagram](http://evil.example/a.png)")
    c = assert_safe(out)
    assert c.tags == [("p", {})]
    assert "".join(c.text).strip() == "diagram (http://evil.example/a.png)"


def test_script_links_stay_text() -> None:
    c = assert_safe(markdown_html("[click](javascript:alert(1))"))
    assert not [t for t, _ in c.tags if t == "a"]
    assert "".join(c.text).strip() == "[click](javascript:alert(1))"


def test_links_open_in_a_new_tab_without_referrer() -> None:
    c = assert_safe(
        markdown_html("[site](https://example.com/a?b=1) <http://x.example> <me@x.example>")
    )
    links = [a for t, a in c.tags if t == "a"]
    assert [a["href"] for a in links] == [
        "https://example.com/a?b=1",
        "http://x.example",
        "mailto:me@x.example",
    ]
    for a in links:
        assert a["rel"] == "noopener noreferrer nofollow" and a["target"] == "_blank"


def test_relative_and_other_scheme_links_are_text() -> None:
    for md in ("[a](/admin)", "[a](file:///etc/passwd)", "[a](ftp://x.example)", "[a](#top)"):
        c = assert_safe(markdown_html(md))
        assert not [t for t, _ in c.tags if t == "a"], md


def test_link_with_attribute_injection_in_title_is_escaped() -> None:
    out = markdown_html('[ok](http://a.example "x\\" onmouseover=\\"alert(1)")')
    c = assert_safe(out)
    ((_, attrs),) = [(t, a) for t, a in c.tags if t == "a"]
    assert attrs["title"] == 'x" onmouseover="alert(1)'


def test_markdown_renders() -> None:
    text = (
        "# Title\n\n"
        "Some **bold**, *em* and `code`.\n\n"
        "- one\n- two\n\n"
        "1. first\n2. second\n\n"
        "| Name | Count |\n|:-----|------:|\n| a<b | 2 |\n\n"
        "```python\nprint('<hi>')\n```\n\n"
        "> quoted\n"
    )
    out = markdown_html(text)
    c = assert_safe(out)
    tags = [t for t, _ in c.tags]
    for tag in ("h1", "strong", "em", "code", "ul", "ol", "li", "table", "th", "td", "pre"):
        assert tag in tags, tag
    assert "<blockquote>" in out
    assert '<td class="align-left">a&lt;b</td>' in out
    assert '<th class="align-right">Count</th>' in out  # a class: CSP forbids style attributes
    assert "style=" not in out
    assert "<code class=\"language-python\">print('&lt;hi&gt;')\n</code>" in out


def test_line_breaks_are_kept() -> None:
    assert markdown_html("line one\nline two") == "<p>line one<br />\nline two</p>\n"


def test_citation_markers_link_to_sources() -> None:
    out = markdown_html("Leave is 10 days [1][2]. 年假十天[3]。")
    assert_safe(out)
    cite = '<sup class="cite"><a href="#source-{0}" data-cite="{0}">[{0}]</a></sup>'
    assert out == (
        f"<p>Leave is 10 days {cite.format(1)}{cite.format(2)}. 年假十天{cite.format(3)}。</p>\n"
    )


def test_only_plain_numeric_markers_become_cites() -> None:
    out = markdown_html("[1, 2] [a] [0] [1000] [^1] `[4]` \\[5\\] [x [6]](https://a.example)")
    assert_safe(out)
    assert 'data-cite="4"' not in out  # in code
    assert 'data-cite="5"' not in out  # escaped
    assert 'data-cite="6"' not in out  # inside a link's text: no nested links
    assert "data-cite" not in out
    assert '<a href="https://a.example"' in out and "x [6]</a>" in out


def test_markers_inside_emphasis_lists_and_tables() -> None:
    out = markdown_html("- **fact [2]**\n\n| a |\n|---|\n| b [3] |")
    assert 'data-cite="2"' in out and 'data-cite="3"' in out


def test_empty_answer() -> None:
    assert markdown_html("") == ""


def test_highlight_escapes_and_marks_the_span() -> None:
    text = '<b>Leave</b> is "10" days & more'
    start = text.index("is")
    out = highlight_html(text, (start, text.index(" &")))
    assert out == "&lt;b&gt;Leave&lt;/b&gt; <mark>is &quot;10&quot; days</mark> &amp; more"
    c = assert_safe(out)
    assert "".join(c.text) == text


def test_highlight_without_or_with_a_bad_span() -> None:
    assert highlight_html("<x>", None) == "&lt;x&gt;"
    assert highlight_html("<x>", (5, 9)) == "&lt;x&gt;"
    assert highlight_html("<x>", (2, 1)) == "&lt;x&gt;"
    assert highlight_html("abc", (-4, 99)) == "<mark>abc</mark>"


def test_highlight_with_context_trims_around_the_span() -> None:
    text = "a" * 50 + "<SPAN>" + "b" * 50
    out = highlight_html(text, (50, 56), context=10)
    assert out == "…" + "a" * 10 + "<mark>&lt;SPAN&gt;</mark>" + "b" * 10 + "…"
    assert highlight_html("xx<S>yy", (2, 5), context=10) == "xx<mark>&lt;S&gt;</mark>yy"


def test_text_html_escapes_markdown_too() -> None:
    assert text_html("**<i>** & [1]") == "**&lt;i&gt;** &amp; [1]"


def test_stored_citation_snippet_html() -> None:
    source_text = "Intro. <b>Leave</b> is ten days. Outro."
    citation: dict[str, object] = {
        "marker": 2,
        "snippet": "<b>Leave</b> is ten days.",
        "snippet_start": 7,
        "snippet_end": 32,
    }
    sources: list[dict[str, object]] = [
        {"marker": 1, "text": "other"},
        {"marker": 2, "text": source_text},
    ]
    assert citation_snippet_html(citation, sources) == (
        "Intro. <mark>&lt;b&gt;Leave&lt;/b&gt; is ten days.</mark> Outro."
    )
    # no matching source: the snippet alone, marked
    assert citation_snippet_html(citation, sources[:1]) == (
        "<mark>&lt;b&gt;Leave&lt;/b&gt; is ten days.</mark>"
    )
