"""Captions from score metadata: instruments, key and mode, meter, tempo word + BPM, style/collection,
composer and mood words, through several templates so that captions vary (paper 4.1: synthetic captions).
"""
from __future__ import annotations

import numpy as np

__all__ = ["key_name", "tempo_word", "mood_words", "meter_words", "join_words", "make_caption", "strip_tempo",
           "TEMPLATES"]

import re

_MAJOR_NAMES = ["C", "Db", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B"]
_MINOR_NAMES = ["C", "C#", "D", "Eb", "E", "F", "F#", "G", "G#", "A", "Bb", "B"]

# (upper BPM bound, Italian term, plain words)
_TEMPI = [(60, "largo", "very slow"), (76, "adagio", "slow"), (108, "andante", "relaxed"),
          (120, "moderato", "moderate"), (156, "allegro", "fast"), (176, "vivace", "lively"),
          (10_000, "presto", "very fast")]

_MOODS = {
    ("major", "slow"): ("calm", "peaceful", "warm", "tender", "serene"),
    ("major", "fast"): ("cheerful", "bright", "joyful", "playful", "energetic"),
    ("minor", "slow"): ("melancholic", "sombre", "wistful", "reflective", "mournful"),
    ("minor", "fast"): ("dramatic", "restless", "urgent", "driving", "dark"),
}


def key_name(tonic: int, mode: str) -> str:
    """'G major', 'F# minor' (conventional spellings)."""
    names = _MAJOR_NAMES if mode == "major" else _MINOR_NAMES
    return f"{names[tonic % 12]} {mode}"


def tempo_word(bpm: float) -> tuple[str, str]:
    """(Italian tempo term, plain English) for a BPM."""
    for hi, it, en in _TEMPI:
        if bpm < hi:
            return it, en
    return _TEMPI[-1][1:]


def mood_words(mode: str, bpm: float, rng: np.random.Generator, k: int = 2) -> list[str]:
    """`k` mood adjectives from mode (major/minor) and tempo (slow below 100 BPM)."""
    pool = _MOODS[(mode if mode in ("major", "minor") else "major", "slow" if bpm < 100 else "fast")]
    return [str(w) for w in rng.choice(pool, size=min(k, len(pool)), replace=False)]


def meter_words(meter: tuple[int, int]) -> str:
    """'3/4 time (waltz-like triple meter)'-style description."""
    num, den = meter
    kind = {2: "duple", 3: "triple", 4: "quadruple", 6: "compound duple", 9: "compound triple",
            12: "compound quadruple"}.get(num, "irregular")
    return f"{num}/{den} time ({kind} meter)"


def join_words(items: list[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    items = [i for i in items if i]
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


TEMPLATES = [
    "{Article} {mood1} {label} played by {instruments}, in {key}, {tempo_en} at {bpm} BPM.",
    "{Tempo_it} {label} for {instruments}; {key}, {meter}, {bpm} BPM. {Mood1} and {mood2}.",
    "Instrumental {label}{by_composer} performed on {instruments}. {Key}, {bpm} BPM, {mood1} mood.",
    "{instruments_cap} {play} {article} {mood1}, {mood2} {label} in {key} at a {tempo_en} {bpm} BPM.",
    "{label_cap}, {meter}, {key}, {tempo_it} ({bpm} BPM); {instruments}; {mood1}, {mood2}.",
    "{label}, {style_word}, {instruments}, {key}, {bpm} bpm, {tempo_en}, {mood1}, {mood2}",
    "A {tempo_en} {key} {label}{by_composer} with {instruments}, {bpm} beats per minute, {meter}.",
]


def make_caption(meta: dict, rng: np.random.Generator, template: int | None = None) -> str:
    """A caption from metadata keys: label, instruments (list), tonic, mode, bpm, meter, style_words, composer."""
    bpm = int(round(meta["bpm"]))
    it, en = tempo_word(bpm)
    moods = mood_words(meta["mode"], bpm, rng)
    instruments = join_words(list(meta["instruments"]))
    style_word = str(rng.choice(meta.get("style_words") or ["instrumental"]))
    composer = meta.get("composer") or ""
    label = meta["label"]
    f = dict(label=label, label_cap=label[:1].upper() + label[1:], instruments=instruments,
             instruments_cap=instruments[:1].upper() + instruments[1:], key=key_name(meta["tonic"], meta["mode"]),
             bpm=bpm, tempo_it=it, Tempo_it=it.capitalize(), tempo_en=en, meter=meter_words(tuple(meta["meter"])),
             mood1=moods[0], mood2=moods[-1], Mood1=moods[0].capitalize(), style_word=style_word,
             by_composer=f" by {composer}" if composer else "")
    f["Key"] = f["key"][:1].upper() + f["key"][1:]
    f["Article"] = _article(f["mood1"]).capitalize()
    f["article"] = _article(f["mood1"])
    f["play"] = "plays" if len(meta["instruments"]) == 1 else "play"
    k = int(rng.integers(len(TEMPLATES))) if template is None else template
    return " ".join(TEMPLATES[k].format(**f).split())


# ---- tempo-free captions (BPM conditioning) -----------------------------------------------------------------

_TEMPO_TERMS = sorted({w for _, it, en in _TEMPI for w in (it, en)}, key=len, reverse=True)
_MOOD_TERMS = sorted({w for pool in _MOODS.values() for w in pool}, key=len, reverse=True)
_BPM = re.compile(r"\s*\(\d+\s*(?:BPM|bpm)\)|\s*\b(?:at\s+(?:a\s+)?)?(?:(?:%s)\s+)?(?:at\s+)?\d+\s*"
                  r"(?:BPM|bpm|beats per minute)\b" % "|".join(_TEMPO_TERMS))
_WORDS = re.compile(r"\b(?:%s)\b(?:\s+mood\b)?" % "|".join(_TEMPO_TERMS + _MOOD_TERMS), re.IGNORECASE)
_TIDY = [(re.compile(r"\s+"), " "), (re.compile(r"\s+([,;.])"), r"\1"), (re.compile(r"\band\s*([,;.]|$)"), r"\1"),
         (re.compile(r"([,;.])(?:\s*[,;])+"), r"\1"), (re.compile(r"[,;]\s*\."), "."),
         (re.compile(r"\.\s*\.+"), "."), (re.compile(r"^[\s,;.]+|[\s,;]+$"), ""),
         (re.compile(r"\b([Aa]n?),\s*"), r"\1 "), (re.compile(r"\b([Aa])n? (?=[^\W\d_])"), r"\1 ")]


def strip_tempo(caption: str) -> str:
    """The caption without what states the tempo: "<n> BPM" / "beats per minute", the Italian and English tempo
    terms, and the mood words (their pools are chosen by tempo, `mood_words`). Training on a share of these
    (`base.tempo_free_p`) makes the model read the tempo from the BPM input instead of the text."""
    s = _WORDS.sub("", _BPM.sub("", caption))
    for pat, rep in _TIDY:
        s = pat.sub(rep, s)
    s = re.sub(r"\b([Aa]) (?=[aeiouAEIOU])", r"\1n ", s)          # a/an agreement after removed adjectives
    return s[:1].upper() + s[1:]
