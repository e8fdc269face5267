"""The web UI's files, without a browser: every script parses, markup enters the page only
through dom.js's setSafeHtml (fed by the API's server-escaped `*_html` fields), nothing loads
from another host, and every string has a Chinese and an English text."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

WEB = Path(__file__).resolve().parents[2] / "web"
SCRIPTS = sorted((WEB / "static" / "js").rglob("*.js"))
HTML_SINKS = re.compile(
    r"\.innerHTML|\.outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function"
)


def test_there_are_scripts() -> None:
    assert len(SCRIPTS) >= 10 and (WEB / "index.html").is_file()


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.name)
def test_script_parses(path: Path) -> None:
    node = shutil.which("node")
    assert node, "node (Debian package nodejs) checks the UI's scripts"
    out = subprocess.run([node, "--check", str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_markup_enters_only_through_set_safe_html() -> None:
    for path in SCRIPTS:
        text = path.read_text(encoding="utf-8")
        sinks = HTML_SINKS.findall(text)
        if path.name == "dom.js":
            assert sinks == [".innerHTML"], sinks  # inside setSafeHtml, and nowhere else
        else:
            assert sinks == [], (path.name, sinks)
        for call in re.findall(r"setSafeHtml\(([^;]*)\)", text):
            if path.name == "dom.js":
                continue
            # only server-escaped fields, or the `html` event's markup
            assert re.search(r"_html\b|\bmarkup\b", call), (path.name, call)


def test_nothing_loads_from_another_host() -> None:
    for path in [WEB / "index.html", WEB / "static" / "app.css", *SCRIPTS]:
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text), path.name
        assert "@import" not in text and "url(http" not in text, path.name


def _string_tables() -> dict[str, dict[str, set[str]]]:
    """{module: {lang: keys}} of each module's addStrings({...}) calls."""
    out: dict[str, dict[str, set[str]]] = {}
    key = re.compile(r"^\s{4}([a-z][a-z0-9_]*):", re.M)
    for path in SCRIPTS:
        text = path.read_text(encoding="utf-8")
        for block in re.findall(r"addStrings\(\{(.*?)\n\}\);", text, re.S):
            parts = re.split(r"^\s{2}(en|zh): \{", block, flags=re.M)
            langs = dict(zip(parts[1::2], parts[2::2], strict=True))
            table = out.setdefault(path.name, {"en": set(), "zh": set()})
            for lang, body in langs.items():
                table[lang] |= set(key.findall(body))
    return out


def test_every_string_has_chinese_and_english() -> None:
    tables = _string_tables()
    assert len(tables) >= 10
    owners: dict[str, str] = {}
    for module, langs in tables.items():
        assert langs["en"] == langs["zh"], (module, langs["en"] ^ langs["zh"])
        for k in langs["en"]:
            assert owners.setdefault(k, module) == module, f"{k} in {owners[k]} and {module}"


def test_every_key_used_exists() -> None:
    known = set().union(*(langs["en"] for langs in _string_tables().values()))
    for path in SCRIPTS:
        for k in re.findall(r"""\bt\(\s*["']([a-z][a-z0-9_]*)["']""", path.read_text("utf-8")):
            assert k in known, (path.name, k)
