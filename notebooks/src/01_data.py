# %% [markdown]
# # 01 · The music corpus: real scores rendered to audio, with exact BPM and captions
#
# **Paper, section 4.1 (Data).** Presto's base model is trained on *"a 3.6K hour dataset of mono 44.1 kHz
# licensed instrumental music, augmented with pitch-shifting and time-stretching. Data includes musical
# meta-data and synthetic captions."* It is evaluated on Song Describer (no vocals) cut into 32 s chunks.
# The model is conditioned on two signals besides the noise level (A.1): a **text prompt** (T5 embeddings,
# concatenated to the audio tokens in attention) and the **BPM** (a scalar, sinusoidally embedded and added to
# the AdaLN conditioning).
#
# That dataset is licensed and unavailable, so we build our own from what ships with our packages:
#
# | paper | here |
# |---|---|
# | licensed instrumental recordings | music21's bundled scores (Essen/O'Neill folk, Bach chorales, Palestrina, Trecento, Beethoven/Haydn/Mozart quartets, Joplin, ...) + any folder of `.mid` files, rendered by **FluidSynth** with a General MIDI soundfont |
# | BPM metadata (from a beat tracker or tags) | the tempo we *render at*: exact by construction |
# | pitch shift / time stretch on audio | **symbolic** transposition and tempo scaling: no DSP artefacts, labels stay exact |
# | synthetic captions | captions from score metadata: instruments, key and mode, meter, tempo word + BPM, style, composer, mood |
# | Song Describer (held-out) | our `test` split: whole pieces never seen in training |
#
# Everything is done by `presto_lib.data` (`build_corpus`); this notebook runs it for the active profile and
# then looks at what came out. Any folder of audio + a captions CSV (e.g. Song Describer itself) can be turned
# into the same manifest format with `python -m presto_lib.stages.corpus folder AUDIO_DIR captions.csv --out DIR`.
#
# **Needs:** no other stage; this notebook *is* the `corpus` stage (`dvc repro corpus`) and renders the corpus
# (several minutes on the cpu profile).

# %% tags=["parameters"]
params_file = "params.yaml"

# %%
import os

from presto_lib.stages.common import start

S = start("corpus", params_file)   # project root, params, seed, threads, device
P = S.P

import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from IPython.display import Audio, Markdown, display

from presto_lib.audio import load_audio
from presto_lib.data import ClipDataset, build_corpus, read_manifest
from presto_lib.data.folder import estimate_bpm
from presto_lib.data.select import available_works
from presto_lib.data.styles import STYLES
from presto_lib.eval.plotting import save_figure, set_theme, spectrogram_grid

C, COMMON = P["corpus"], P["common"]
FIG, TAB = S.figures, S.tables
set_theme()                        # the project's one figure style
FIG.mkdir(parents=True, exist_ok=True)
TAB.mkdir(parents=True, exist_ok=True)
print(f"profile {P['profile']}: {COMMON['sample_rate']} Hz, {COMMON['clip_seconds']} s clips, "
      f"<= {C['max_pieces_per_style']} pieces and ~{C['max_clips_per_style']} clips per style")

# %% [markdown]
# ## 1. Choosing pieces: balance the styles
#
# music21's corpus holds ~15k works, but 87% of them are folk melodies (the Essen collection alone has ~8.5k).
# Sampled uniformly, the model would learn one thing: a single monophonic tune. So the builder picks works per
# **style** (a row of `presto_lib/data/styles.py`: its collections, how to orchestrate it, its tempo range and
# caption words) from music21's *metadata cache* (no score parsed), caps pieces and clips per style, and
# gives styles with few pieces more (augmented) performances.

# %%
avail = pd.Series(available_works(), name="works in music21")
folk = avail[[s for s in avail.index if any(w in s for w in ("folk", "dance", "fiddle", "air"))]].sum()
display(Markdown(f"Folk styles: **{folk} of {avail.sum()} works ({100 * folk / avail.sum():.0f}%)**."))
avail.to_frame().T

# %% [markdown]
# ## 2. Build the corpus
#
# For every chosen piece (in a process pool, one piece per task):
# 1. **parse** it with music21 (ties merged) into note arrays per part;
# 2. pick a **tempo**: the score's metronome mark when it has a real one, else one drawn (seeded per piece)
#    from the style's range. The label is *beats* per minute, the beat being the meter's (a quarter in 4/4,
#    a dotted quarter in 6/8), and the MIDI tempo is set to exactly that;
# 3. make **performances**: the original, plus (training pieces only) augmented ones, each transposed by a few
#    semitones and played at a scaled tempo, with the key and BPM labels recomputed;
# 4. **arrange** each: General MIDI programs per part (ensembles stay ensembles: a chorale becomes an organ,
#    a string quartet, a brass or a wind quartet; a folk tune gets one melody instrument), and for single-melody
#    styles optionally a chord + bass (+ drums) accompaniment built from the score's chord symbols or from the
#    diatonic triads that best fit the melody;
# 5. **render** all performances of the piece in one FluidSynth call and cut them into fixed-length clips,
#    dropping silent/near-silent clips and normalising loudness (ITU-R BS.1770) to a common target;
# 6. write a **caption** per clip from the metadata, through one of several templates.
#
# Splits are assigned by *piece group* (a piece and its variants/duplicates, e.g. the same tune title in a
# folk collection), dealt round-robin over styles, so augmented versions stay with their piece and no piece
# is in two splits. Valid and test pieces are rendered once, unaugmented: the test split plays Song Describer's
# role.

# %%
manifest = build_corpus(C["out_dir"], P)
summary = json.loads((Path(manifest).parent / "summary.json").read_text())
df = read_manifest(manifest)
display(Markdown(f"**{summary['clips']} clips = {summary['hours']:.2f} h** of audio from {summary['pieces_used']} pieces "
                 f"in {summary['build_seconds']:.0f} s on {summary['workers']} workers; "
                 f"{summary['pieces_skipped']} pieces skipped; clips dropped: {summary['clips_dropped'] or 'none'}."))
df.head(3)

# %% [markdown]
# Pieces that failed to parse or render are skipped, with their reason, in `skipped.csv`:

# %%
pd.read_csv(Path(manifest).parent / "skipped.csv").head(10)

# %% [markdown]
# ## 3. What is in it

# %%
table = (df.groupby("style")
           .agg(pieces=("piece_id", "nunique"), clips=("path", "size"), hours=("duration_s", lambda s: s.sum() / 3600),
                bpm_mean=("bpm", "mean"), bpm_min=("bpm", "min"), bpm_max=("bpm", "max"),
                minor_pct=("key", lambda k: 100 * k.str.endswith("minor").mean()),
                augmented_pct=("semitones", lambda s: 100 * (s != 0).mean()),
                accompanied_pct=("accompanied", lambda a: 100 * a.astype(str).eq("True").mean()))
           .join(df.pivot_table(index="style", columns="split", values="path", aggfunc="size", fill_value=0))
           .join(avail))
total = pd.DataFrame([{"pieces": df.piece_id.nunique(), "clips": len(df), "hours": df.duration_s.sum() / 3600,
                       "bpm_mean": df.bpm.mean(), "bpm_min": df.bpm.min(), "bpm_max": df.bpm.max(),
                       "minor_pct": 100 * df.key.str.endswith("minor").mean(),
                       "augmented_pct": 100 * (df.semitones != 0).mean(),
                       "accompanied_pct": 100 * df.accompanied.astype(str).eq("True").mean(),
                       **df.split.value_counts().to_dict(), "works in music21": avail.sum()}], index=["all"])
table = pd.concat([table, total]).round(2)
table.index.name = "style"
table.to_csv(TAB / "corpus_summary.csv")
(TAB / "corpus_summary.md").write_text(
    f"Corpus for profile `{P['profile']}` ({COMMON['sample_rate']} Hz, {COMMON['clip_seconds']} s clips): "
    f"{len(df)} clips, {df.duration_s.sum() / 3600:.2f} h.\n\n" + table.to_markdown() + "\n")
table

# %%
fig, ax = plt.subplots(2, 3, figsize=(16, 8.5))
styles = table.index[:-1]
a = ax[0, 0]
y = np.arange(len(styles))
a.barh(y + 0.2, avail.reindex(styles).fillna(0), height=0.4, color="0.6", label="works in music21")
a.barh(y - 0.2, table.loc[styles, "clips"], height=0.4, color="C0", label="clips in corpus")
a.set_yticks(y, styles)
a.set_xscale("log"); a.set_title("(a) available works vs clips per style"); a.legend(loc="lower right", fontsize=8)
a = ax[0, 1]
for split in ("train", "valid", "test"):
    a.hist(df[df.split == split].bpm, bins=np.arange(30, 240, 6), alpha=0.6, label=split, density=True)
a.set_xlabel("BPM"); a.set_title("(b) BPM by split"); a.legend()
a = ax[0, 2]
tempo_f = df[df.semitones != 0]
a.scatter(tempo_f.semitones + np.random.default_rng(0).uniform(-.2, .2, len(tempo_f)), tempo_f.tempo_factor, s=6, alpha=0.5)
a.set_xlabel("transposition (semitones)"); a.set_ylabel("tempo factor"); a.set_title("(c) symbolic augmentations")
a = ax[1, 0]
inst = df.instruments.str.split(", ").explode().value_counts().head(18)
a.barh(inst.index[::-1], inst.values[::-1], color="C2"); a.set_title("(d) instruments (clips)")
a = ax[1, 1]
keys = df.key.value_counts()
a.bar(range(len(keys)), keys.values, color=["C3" if k.endswith("minor") else "C1" for k in keys.index])
a.set_xticks(range(len(keys)), keys.index, rotation=90, fontsize=7); a.set_title("(e) keys (orange major, red minor)")
a = ax[1, 2]
sizes = df.split.value_counts().reindex(["train", "valid", "test"]).fillna(0)
a.bar(sizes.index, sizes.values, color=["C0", "C1", "C2"])
for i, v in enumerate(sizes.values):
    a.text(i, v, f"{int(v)} clips\n{df[df.split == sizes.index[i]].piece_id.nunique()} pieces", ha="center", va="bottom", fontsize=8)
a.set_title("(f) split sizes (by piece)")
fig.suptitle(f"Corpus overview - profile {P['profile']}: {len(df)} clips, {df.duration_s.sum() / 3600:.2f} h")
fig.tight_layout()
save_figure(fig, FIG / "fig_corpus_overview.png")
plt.show()

# %% [markdown]
# ## 4. No piece in two splits
#
# Every piece (and every group of variants) lives in exactly one split; the augmented performances of a
# training piece are training data too.

# %%
leaks = df.groupby("group").split.nunique()
assert (leaks == 1).all(), leaks[leaks > 1]
df.groupby("split").agg(pieces=("piece_id", "nunique"), groups=("group", "nunique"), clips=("path", "size"),
                        augmented=("semitones", lambda s: int((s != 0).sum())))

# %% [markdown]
# ## 5. Captions
#
# Several templates, so the text encoder sees varied phrasing of the same facts; the BPM is also stored as its
# own column (the model gets it as a separate scalar condition).

# %%
with pd.option_context("display.max_colwidth", 200):
    display(df.sample(min(12, len(df)), random_state=0)[["split", "style", "bpm", "key", "caption"]])

# %% [markdown]
# ## 6. Listen and look
#
# A few clips per split: log-mel spectrograms (`presto_lib.audio.mel_spectrogram`, the differentiable one the
# models use) and players.

# %%
n_ex = int(C.get("n_examples", 4))
firsts = df.drop_duplicates(["split", "style"])          # one clip per style and split
examples = pd.concat([firsts[firsts.split == s].sample(min(n_ex, (firsts.split == s).sum()), random_state=1)
                      for s in ("train", "test")]).reset_index(drop=True)
sr = int(COMMON["sample_rate"])
# a grid: one row per split, one panel per style, on one dB scale with one colour bar (time in seconds)
rows = {s: examples[examples.split == s] for s in ("train", "test") if (examples.split == s).any()}
ncols = max(len(r) for r in rows.values())
fig = spectrogram_grid({s: [load_audio(Path(manifest).parent / p)[0][0] for p in r.path] for s, r in rows.items()},
                       sr, ncols=ncols)
for (s, r), axes_row in zip(rows.items(), [fig.axes[i * ncols:(i + 1) * ncols] for i in range(len(rows))]):
    for a, (_, row) in zip(axes_row, r.iterrows()):
        a.set_title(f"{s}: {row['style']}\n{row.bpm:g} BPM, {row.key}", fontsize=8)
fig.suptitle("Corpus examples: log-mel spectrograms, one clip per style")
save_figure(fig, FIG / "fig_corpus_examples.png")
plt.show()

# %%
for _, row in examples.iterrows():
    display(Markdown(f"**{row.split} / {row['style']}** - *{row.caption}*"))
    display(Audio(str(Path(manifest).parent / row.path)))

# %% [markdown]
# ### Symbolic augmentation, heard
# The same training piece, original and augmented: transposed and played at another tempo, labels updated.

# %%
aug_piece = df[(df.split == "train") & (df.semitones != 0)].piece_id.iloc[0]
for _, row in df[(df.piece_id == aug_piece) & (df.clip == 0)].iterrows():
    display(Markdown(f"render {row.render}: {row.semitones:+d} semitones, tempo x{row.tempo_factor:.3f} -> "
                     f"**{row.bpm:g} BPM, {row.key}**, {row.instruments}"))
    display(Audio(str(Path(manifest).parent / row.path)))

# %% [markdown]
# ## 7. Why render the BPM instead of estimating it?
#
# A user audio folder without BPM gets one from librosa's tempo estimator (`presto_lib.data.folder.estimate_bpm`).
# On our clips, where the truth is known, the estimator is often right, but octave errors (x2, x1/2) and
# triple/duple confusions are common, which is why our labels come from the rendering tempo itself.

# %%
check = df.sample(min(40, len(df)), random_state=2).copy()
check["estimated"] = [estimate_bpm(load_audio(Path(manifest).parent / p)[0][0], sr) for p in check.path]
ratio = check.estimated / check.bpm
close = lambda r, t: np.abs(np.log2(r / t)) < 0.04
summary_est = {"within 4%": close(ratio, 1).mean(), "octave error (x2 or x1/2)": (close(ratio, 2) | close(ratio, .5)).mean(),
               "3:2 / 2:3 error": (close(ratio, 1.5) | close(ratio, 2 / 3)).mean()}
display(pd.Series(summary_est, name="fraction of clips").round(2).to_frame())
fig, a = plt.subplots(figsize=(4.5, 4.2))
a.scatter(check.bpm, check.estimated, s=14)
lim = [30, 260]
for k, ls in [(1, "-"), (2, ":"), (0.5, ":")]:
    a.plot(lim, [k * lim[0], k * lim[1]], "k", ls=ls, lw=0.8)
a.set_xlim(lim); a.set_ylim(lim); a.set_xlabel("rendered BPM (label)"); a.set_ylabel("librosa estimate")
a.set_title("exact labels vs a beat-tracker estimate")
plt.show()

# %% [markdown]
# ## 8. Using the data
#
# Later stages read clips with `ClipDataset(manifest, split)`: each item is
# `{"wave": Tensor[1, T], "caption": str, "bpm": float, "piece_id": str}`.

# %%
ds = ClipDataset(manifest, "train")
item = ds[0]
print(len(ds), "training clips;", {k: (tuple(v.shape) if hasattr(v, "shape") else v) for k, v in item.items()})
