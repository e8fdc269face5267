"""Which language a text is written in, as far as Zhiku cares: Chinese or English."""

from __future__ import annotations

import re
import unicodedata

_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LATIN_WORD = re.compile(r"[A-Za-z]+")


def text_language(text: str) -> str:
    """ "zh" when the text is mostly Chinese (Han characters outnumber Latin words), else "en".

    A mixed query such as "Zhiku 的 API key 怎么创建" counts as Chinese.
    """
    text = unicodedata.normalize("NFKC", text)
    han = len(_HAN.findall(text))
    words = len(_LATIN_WORD.findall(text))
    return "zh" if han and han >= words else "en"
