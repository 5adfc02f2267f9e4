"""Style table for the offline corpus: which music21 collections form a style, how they are orchestrated,
their tempo range and caption words. One row per style; the builder balances clips across styles.

GM programs are 0-based General MIDI numbers. An ensemble lists programs from the highest voice to the
lowest; parts are matched to it by register (see `arrange.assign_programs`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Style", "STYLES", "GM_NAMES", "program_name", "style_of_corpus_path", "USER_STYLE"]

# ---- licences ----
_M21 = "music21 corpus (public-domain work; encoding licensed for research, see music21/corpus/license.txt)"
_ESSEN = "EsAC / Essen folksong collection via music21 (non-commercial use)"
_HUMDRUM = "CCARH Humdrum encoding via music21 (non-commercial research use)"

# ---- friendly General MIDI names (the programs our palettes use; others fall back to pretty_midi's) ----
GM_NAMES = {
    0: "piano", 1: "bright piano", 3: "honky-tonk piano", 4: "electric piano", 6: "harpsichord",
    8: "celesta", 10: "music box", 11: "vibraphone", 12: "marimba", 19: "church organ", 20: "reed organ",
    21: "accordion", 22: "harmonica", 24: "nylon guitar", 25: "acoustic guitar", 32: "acoustic bass",
    33: "electric bass", 35: "fretless bass", 40: "violin", 41: "viola", 42: "cello", 43: "double bass",
    45: "pizzicato strings", 46: "harp", 48: "string ensemble", 49: "slow strings", 56: "trumpet",
    57: "trombone", 58: "tuba", 60: "french horn", 61: "brass section", 64: "soprano sax", 65: "alto sax",
    66: "tenor sax", 68: "oboe", 69: "english horn", 70: "bassoon", 71: "clarinet", 72: "piccolo",
    73: "flute", 74: "recorder", 75: "pan flute", 77: "shakuhachi", 78: "whistle", 79: "ocarina",
    104: "sitar", 105: "banjo", 106: "shamisen", 107: "koto", 109: "bagpipe", 110: "fiddle",
}


def program_name(program: int, is_drum: bool = False) -> str:
    """A short lower-case instrument name for a GM program (or 'drums')."""
    if is_drum:
        return "drums"
    if program in GM_NAMES:
        return GM_NAMES[program]
    import pretty_midi
    return pretty_midi.program_to_instrument_name(int(program)).lower().replace(" (", ", ").rstrip(")")


@dataclass(frozen=True)
class Style:
    """One style: its music21 sources, orchestration palette, tempo range and caption vocabulary."""
    name: str
    sources: tuple[str, ...]                 # corpus path prefixes
    label: str                               # caption noun phrase, e.g. "Irish dance tune"
    ensembles: tuple[tuple[int, ...], ...]   # palettes, high -> low voice
    bpm_range: tuple[int, int]               # beats per minute when the score has no usable tempo mark
    words: tuple[str, ...] = ()              # extra caption words (genre, function)
    accompany: float = 0.0                   # probability of adding the drum/bass/chord layer
    drums: float = 0.0                       # probability that the layer includes drums
    keep_first: float = 0.0                  # probability of the first ensemble (the original scoring)
    license: str = _M21
    excludes: tuple[str, ...] = field(default_factory=tuple)


_MELODY = ((73,), (74,), (40,), (21,), (22,), (71,), (68,), (0,), (11,), (24,), (56,), (65,), (79,), (12,))

STYLES: dict[str, Style] = {s.name: s for s in [
    Style("german_folk", ("essenFolksong/",), "German folk song", _MELODY, (72, 132),
          ("folk", "traditional", "song melody"), accompany=0.5, drums=0.3, license=_ESSEN,
          excludes=("essenFolksong/han", "essenFolksong/natmin", "essenFolksong/irl", "essenFolksong/test")),
    Style("chinese_folk", ("essenFolksong/han", "essenFolksong/natmin"), "Chinese folk melody",
          ((73,), (77,), (107,), (75,), (40,), (106,), (46,), (12,)), (60, 112),
          ("folk", "pentatonic", "traditional"), accompany=0.25, drums=0.0, license=_ESSEN),
    Style("irish_dance", ("oneills1850/", "essenFolksong/irl"), "Irish dance tune",
          ((110,), (40,), (73,), (78,), (21,), (109,), (105,), (25,)), (96, 132),
          ("celtic", "jig", "reel", "dance"), accompany=0.6, drums=0.6),
    Style("fiddle_tune", ("ryansMammoth/", "nottingham-dataset/", "miscFolk/americanfife"),
          "fiddle tune", ((110,), (40,), (105,), (22,), (72,), (73,), (21,), (0,)), (96, 138),
          ("folk", "hornpipe", "country dance"), accompany=0.7, drums=0.7),
    Style("scottish_air", ("airdsAirs/", "miscFolk/northumbrian"), "Scottish and Northumbrian air",
          ((73,), (40,), (109,), (46,), (42,), (74,), (71,), (24,)), (66, 112),
          ("celtic", "air", "ballad"), accompany=0.5, drums=0.2),
    Style("chorale", ("bach/", "johnson_j_r/"), "four-part chorale",
          ((19, 19, 19, 19), (40, 40, 41, 42), (56, 56, 57, 58), (73, 68, 71, 70), (0, 0, 0, 0),
           (48, 48, 48, 48), (20, 20, 20, 20), (60, 60, 57, 58)), (60, 96),
          ("baroque", "hymn", "sacred", "homophonic"), keep_first=0.0),
    Style("renaissance", ("palestrina/", "josquin/", "lusitano/", "monteverdi/"), "Renaissance polyphony",
          ((74, 74, 74, 74, 74), (41, 41, 42, 42, 43), (19, 19, 19, 19, 19), (56, 57, 57, 57, 58),
           (49, 49, 49, 49, 49), (73, 68, 71, 70, 70), (20, 20, 20, 20, 20)), (56, 84),
          ("early music", "polyphonic", "counterpoint", "sacred"), license=_HUMDRUM,
          excludes=("monteverdi/madrigal.3.1_old",)),
    Style("medieval", ("trecento/", "ciconia/", "luca/"), "medieval Trecento piece",
          ((74, 24, 41), (68, 46, 70), (20, 20, 20), (73, 41, 42), (75, 24, 70)), (60, 100),
          ("early music", "ars nova", "polyphonic")),
    Style("string_quartet", ("beethoven/", "haydn/", "mozart/k1", "mozart/k4", "mozart/k8",
                             "schumann_robert/opus41", "corelli/"), "classical string quartet",
          ((40, 40, 41, 42), (48, 48, 48, 48), (0, 0, 0, 0), (73, 68, 71, 70), (40, 40, 42, 43)), (60, 144),
          ("classical", "chamber music", "strings"), keep_first=0.7),
    Style("piano", ("joplin/", "mozart/k545", "chopin/", "schumann_clara/polonaise", "cpebach/",
                    "schoenberg/", "leadSheet/"), "solo piano piece",
          ((0,), (1,), (4,), (6,), (3,)), (60, 132), ("keyboard", "solo", "romantic", "ragtime"),
          keep_first=0.6, license=_M21),
    Style("song_with_piano", ("schubert/", "schumann_robert/dichterliebe", "schumann_robert/opus48",
                              "handel/", "verdi/", "weber/", "beach/", "liliuokalani/", "schumann_clara/opus17",
                              "webern/"), "song with piano accompaniment",
          ((40, 0, 0), (73, 0, 0), (71, 0, 0), (42, 0, 0), (68, 0, 0), (56, 0, 0)), (56, 112),
          ("lied", "aria", "lyrical", "romantic")),
]}

# User MIDI folders form one extra style, orchestrated as written.
USER_STYLE = Style("user_midi", (), "MIDI piece", ((0,),), (70, 130), ("instrumental",), accompany=0.0)

# Never used: test files and analyses without real notes.
_SKIP = ("demos/", "theoryExercises/", "essenFolksong/test")


def style_of_corpus_path(path: str) -> Style | None:
    """The style a music21 corpus path belongs to (the most specific source prefix), or None."""
    if path.startswith(_SKIP) or path.endswith(".rntxt"):
        return None
    best, best_len = None, -1
    for s in STYLES.values():
        if any(path.startswith(x) for x in s.excludes):
            continue
        for src in s.sources:
            if path.startswith(src) and len(src) > best_len:
                best, best_len = s, len(src)
    return best
