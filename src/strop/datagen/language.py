"""A light language guess: the writing system first, then, for Latin script, the commonest function words.

Language-ID models (fastText lid.176, CLD3) are more accurate but need weights downloaded at run time.
For a filter that drops rows in the wrong language, two cheap signals do most of the work: the Unicode
script of the letters (Cyrillic, CJK, Arabic ... each names a language or a small family), and within
Latin script, which language's most frequent short words cover the most tokens (Cavnar & Trenkle's
observation that a few hundred frequent words separate languages; a few dozen suffice at row length).
"""

from __future__ import annotations

import unicodedata

from strop.datagen.minhash import words

_SCRIPTS = {
    "CYRILLIC": "ru",
    "GREEK": "el",
    "ARABIC": "ar",
    "HEBREW": "he",
    "DEVANAGARI": "hi",
    "THAI": "th",
    "HANGUL": "ko",
    "HIRAGANA": "ja",
    "KATAKANA": "ja",
    "CJK": "zh",
}
_STOPWORDS = {
    "en": "the and of to a in is that it for on with as are this be was by you not or have from at what how",
    "fr": "le la les de des et un une est que qui dans pour pas sur au du ce il elle sont avec vous nous",
    "de": "der die das und ist nicht ein eine zu den von mit sich des auf für im dem sie es wie auch",
    "es": "el la los las de y que en un una es por para con no se su al lo como más pero sus",
    "it": "il la di che e un una per non sono con del della le gli si da nel come anche",
    "pt": "o a os as de e que em um uma do da para com não se por mais como dos das",
    "nl": "de het een en van is dat in op te zijn niet met voor er aan ook als maar",
}
_WORDSETS = {lang: set(text.split()) for lang, text in _STOPWORDS.items()}


def _script(char: str) -> str | None:
    name = unicodedata.name(char, "")
    for script in _SCRIPTS:
        if name.startswith(script):
            return script
    return "LATIN" if name.startswith("LATIN") else None


def detect(text: str) -> str:
    """An ISO 639-1 code, or "unknown" when the text has no letters or no known function words."""
    counts: dict[str, int] = {}
    for char in text:
        if char.isalpha():
            script = _script(char)
            if script is not None:
                counts[script] = counts.get(script, 0) + 1
    if not counts:
        return "unknown"
    script = max(counts, key=lambda k: counts[k])
    if script != "LATIN":
        if script == "CJK" and (counts.get("HIRAGANA", 0) + counts.get("KATAKANA", 0)) > 0:
            return "ja"
        return _SCRIPTS[script]
    tokens = words(text)
    hits = {lang: sum(token in wordset for token in tokens) for lang, wordset in _WORDSETS.items()}
    best = max(hits, key=lambda k: hits[k])
    return best if hits[best] > 0 else "unknown"
