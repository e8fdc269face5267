"""Text analysis for the keyword index: one analyzer for Chinese and English.

NFKC folds full-width forms to half-width; CJK runs are cut with jieba (search mode, so
compound words also yield their parts); other runs become lower-case words, English stop
words are dropped and the rest Snowball-stemmed. Codes such as `AB-1234` or `v2.1` are kept
whole *and* split, so exact product codes and their parts both match.
"""

from __future__ import annotations

import logging
import re
import threading
import unicodedata
from functools import lru_cache

import jieba
import Stemmer

from core.language import text_language
from core.stopwords import CHINESE_STOP_WORDS, ENGLISH_STOP_WORDS

__all__ = ["analyze", "is_keyword_query", "normalize", "text_language"]

jieba.setLogLevel(logging.WARNING)
_init_lock = threading.Lock()
_initialized = False

_CJK = r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3040-\u30ff\uac00-\ud7af"
_RUN = re.compile(rf"([{_CJK}]+)|([^\s{_CJK}]+)")
_WORD = re.compile(r"[^\W_]+(?:[-_./][^\W_]+)*", re.UNICODE)
_SUBWORD = re.compile(r"[^\W_]+", re.UNICODE)

_stemmer = Stemmer.Stemmer("english")


def normalize(text: str) -> str:
    return unicodedata.normalize("NFKC", text).lower()


def _ensure_jieba() -> None:
    global _initialized
    if not _initialized:
        with _init_lock:
            if not _initialized:
                jieba.initialize()
                _initialized = True


@lru_cache(maxsize=200_000)
def _stem(word: str) -> str:
    return str(_stemmer.stemWord(word))


def analyze(text: str) -> list[str]:
    """Tokens for indexing and for queries (the same analyzer on both sides)."""
    _ensure_jieba()
    tokens: list[str] = []
    for cjk, other in _RUN.findall(normalize(text)):
        if cjk:
            for tok in jieba.cut_for_search(cjk):
                if tok.strip() and tok not in CHINESE_STOP_WORDS:
                    tokens.append(tok)
            continue
        for word in _WORD.findall(other):
            parts = _SUBWORD.findall(word)
            if len(parts) > 1:
                tokens.append(word)
            for part in parts:
                if part in ENGLISH_STOP_WORDS:
                    continue
                tokens.append(_stem(part) if part.isascii() and part.isalpha() else part)
    return tokens


_QUERY_WORD = re.compile(r"[^\W_]+(?:[-_./][^\W_]+)*", re.UNICODE)
_CODE = re.compile(r"(?=[^\W_]*\d)(?=[^\W_]*[^\W\d_])|\d+[-_./]\d", re.UNICODE)


def is_keyword_query(query: str) -> bool:
    """True for look-ups rather than questions: at most two content words (a name, a term), or
    mostly codes (letters mixed with digits such as `XR-7731-B`, or `2024-017`). Embeddings
    blur such queries; exact keyword matches must decide them."""
    words: list[str] = []
    han_words = 0
    for cjk, other in _RUN.findall(normalize(query)):
        if cjk:
            han_words += (len(cjk) + 1) // 2  # a Chinese word is about two characters
        else:
            words += [w for w in _QUERY_WORD.findall(other) if w not in ENGLISH_STOP_WORDS]
    if len(words) + han_words <= 2:
        return True
    codes = sum(1 for w in words if _CODE.search(w))
    return codes * 2 >= len(words) + han_words
