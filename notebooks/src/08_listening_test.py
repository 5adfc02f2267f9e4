# %% [markdown]
# # 08 - Listening test: a blinded rating kit and the paper's analysis (sec. 4.5, Fig. 12)
#
# Objective metrics (FAD, MMD, CLAP score) are proxies; the paper also asks people. Section 4.5:
#
# > Users ($n = 16$) were given 20 sets of examples generated from each model (randomly cut to 10s for brevity)
# > using random prompts from Song Describer and asked to rate the musical quality, taking into account both
# > fidelity and semantic text match between 0-100. We run multiple paired t-tests with Bonferroni correction
# > and find **Presto-LS** rates highest against all baselines ($p < 0.05$).
#
# Fig. 12 shows the ratings as a violin plot. This notebook rebuilds the whole protocol:
#
# 1. **Kit**: pick prompts from the test split, take one clip per system per prompt, cut one random excerpt
#    *at the same offset for every system* (so raters compare the same musical moment), loudness-match the set,
#    give every clip a random blinded id and shuffle. The kit's `public/` folder is what raters see; the key
#    (blinded id -> system) lives outside it.
# 2. **Rating**: a page, served by a tiny local server, shows each set's caption, one player and one 0-100
#    slider per clip, and refuses a set until every slider has been moved.
# 3. **Analysis**: unblind, per-system means with 95% confidence intervals, paired t-tests of the chosen system
#    against each other system with Bonferroni correction, and the violin plot.
#
# Besides the generated systems, the kit holds a **hidden reference** (the real test clip) and two **anchors**
# derived from it (a low-passed and a noisy copy), as in MUSHRA (ITU-R BS.1534). They cost raters little and
# show whether a rater is listening at all: the reference should be rated high, the anchors low.
#
# **Needs:** the `corpus` stage and the Table 2 samples of the systems in `listening.systems`: `dvc repro
# presto_l_finetune@presto_l presto_s_run@ls_ittt presto_ls_distill` (which run `base` too); a system whose
# samples do not exist yet is skipped with a warning. This notebook *is* the `listening` stage.

# %% tags=["parameters"]
params_file = "params.yaml"

# %%
import os

from presto_lib.stages.common import require, start

S = start("listening", params_file)   # project root, params, seed, threads, device
P = S.P

import json
from pathlib import Path

import pandas as pd
from IPython.display import Audio, Image, Markdown, display
from scipy import stats

from presto_lib.eval import listening_analysis as la
from presto_lib.eval.listening import build_kit_from_params
from presto_lib.eval.plotting import display_name, set_theme

L = P["listening"]
set_theme()                        # the project's one figure style
require(L["manifest"], "corpus")
print(f"profile {P['profile']}: {L['n_sets']} sets, excerpt {L['excerpt_seconds']} s, "
      f"{P['common']['sample_rate']} Hz, systems {sorted(L['systems']) or '(none generated yet)'}")

# %% [markdown]
# ## 1. Build the kit
#
# The systems are the `data/samples/<system>/` folders listed in `params.yaml` (`listening.systems`); each holds
# one clip per test-split prompt, in order: the base model, Presto-L, Presto-S and Presto-LS, as in the paper's
# Fig. 12, so the stage runs after the stages that generate them. A listed folder that does not exist is skipped
# with a warning (the kit then holds fewer systems).
#
# Loudness matching (ITU-R BS.1770, `target_lufs`) matters: louder clips are reliably rated "better", which
# would measure level, not quality. After matching, one gain shared by the whole set keeps the loudest peak
# below full scale, so the clips of a set stay matched to each other.

# %%
kit = build_kit_from_params(P)
key = la.load_key(kit)
public = sorted(p.relative_to(kit / "public").as_posix() for p in (kit / "public").rglob("*") if p.is_file())
assert "key.csv" not in public, "the key must never be served"
print(f"kit: {kit}  ({len(public)} public files, key kept at {kit / 'key.csv'})")
display(key.groupby("system").agg(clips=("clip", "count"), seconds=("seconds", "first")))

# %% [markdown]
# What a rater's browser receives for one set: a caption and opaque clip ids - no system names, no file names
# that could give the system away. The clip order is shuffled per set, and the server reshuffles the sets and
# the clips within them for every rater (seeded by the kit id and the rater's name, so a reload is stable).

# %%
public_kit = json.loads((kit / "public" / "kit.json").read_text())
print(json.dumps(public_kit["sets"][0], indent=1))

# %% [markdown]
# ### Listen to one set
# Here, unlike on the rating page, we reveal which system each clip is.

# %%
first = public_kit["sets"][0]
display(Markdown(f"**Caption:** {first['caption']}"))
for clip in first["clips"]:
    display(Markdown(f"`{clip}` = **{display_name(key.set_index('clip').loc[clip, 'system'])}**"))
    display(Audio(filename=str(kit / "public" / "audio" / f"{clip}.wav")))

# %% [markdown]
# ## 2. Rating: the page and the server
#
# A real test (see `data/listening_test/README.md`):
#
# ```bash
# python -m presto_lib.stages.listening build                       # or: dvc repro listening
# python -m presto_lib.stages.listening serve data/listening_test/kit --ratings data/listening_test/ratings.csv
# ```
#
# The server binds to 127.0.0.1 only and serves nothing but the kit's `public/` files. Each submitted set must
# rate every clip of that set exactly once with an integer 0-100; unknown clips, out-of-range ratings and a
# second submission of the same (rater, set) are refused, and accepted rows are appended atomically as
# `rater, set, clip, rating, timestamp`.
#
# ## 3. Ratings: human, or simulated
#
# We have no human raters. When `data/listening_test/ratings.csv` exists it is analysed; otherwise the analysis
# runs on **simulated raters** drawn from a documented model, so every step below runs and can be checked:
#
# $$ r_{i,s,k} = \mathrm{clip}_{[0, 100]}\big(\mathrm{round}(q_k + b_i + c_s + \varepsilon_{i,s,k})\big),\quad
#    b_i \sim \mathcal N(0, \sigma_\text{rater}^2),\ c_s \sim \mathcal N(0, \sigma_\text{set}^2),\
#    \varepsilon \sim \mathcal N(0, \sigma_\text{noise}^2) $$
#
# for rater $i$, set $s$ and system $k$ with "true" quality $q_k$. The reference and anchors get qualities in
# their order by construction; every generated system gets the same `default_quality`: the simulation has no
# opinion on which model is better, and its results say nothing about the paper's claim.

# %%
res = la.run_analysis(kit, L["ratings"], L, seed=int(P["common"]["seed"]))
print(f"data: {res.label}  -  {res.ratings['rater'].nunique()} raters, {len(res.ratings)} ratings")
res.ratings.head()

# %% [markdown]
# ## 4. Paired t-tests with Bonferroni correction
#
# Every rater rates every system, so the comparison is **paired**: for rater $i$ let $d_i$ be the difference
# between their mean rating of the chosen system and of another system. A lenient rater rates everything
# higher; the difference cancels that bias. The test statistic is
#
# $$ t = \frac{\bar d}{s_d / \sqrt n}, \qquad \text{d.o.f.} = n - 1, $$
#
# with $n$ raters (the units here: `listening.unit = rater`; `rater_set` pairs every (rater, set) instead,
# which gives more pairs but treats one rater's ratings as independent, so its p-values are optimistic).
#
# Testing the chosen system against $m$ others at $\alpha = 0.05$ each would make *some* false "win" far more
# likely than 5%. Bonferroni's correction multiplies each p-value by $m$ (capped at 1): the chance of any false
# positive among the $m$ tests is then at most $\alpha$.

# %%
display(res.summary.round(2))
display(res.tests.round(4))

# %% [markdown]
# Why pairing matters: the same data tested as if the groups were independent (Welch's unpaired t-test over
# rater means) leaves the rater-to-rater spread (lenient vs strict raters) in the noise. When raters differ a
# lot, the paired p-values are much smaller; with only a handful of raters the paired test's fewer degrees of
# freedom ($n - 1$ instead of about $2n - 2$) can cost more than it gains. Compare the two columns.

# %%
wide = la.unit_means(res.ratings, res.unit)
pd.DataFrame({other: {"paired p": stats.ttest_rel(wide[res.chosen], wide[other]).pvalue,
                      "unpaired (Welch) p": stats.ttest_ind(wide[res.chosen], wide[other], equal_var=False).pvalue}
              for other in wide.columns if other != res.chosen}).T

# %% [markdown]
# ## 5. Fig. 12 and the table
# The violin shows every rating of a system; the black dot and bars its mean and 95% CI over raters; the
# label above each violin the Bonferroni-corrected p-value of the chosen system (red) against it.

# %%
table_csv, table_md = la.write_table(res, S.tables / "listening_test.csv")
fig = la.plot_violin(res, S.figures / "fig12_listening_test.png")
display(Image(filename=str(fig)))
display(Markdown(table_md.read_text()))

# %% [markdown]
# **Reading it.** With simulated raters the plot only checks the machinery: the hidden reference beats the
# anchors by construction. With human ratings it answers the paper's question: is the chosen system
# (Presto-LS in the paper, `listening.chosen`) rated higher than every other system after correction for
# multiple comparisons? Two cautions from the protocol itself: 10 s excerpts judge local quality, not long-range
# structure; and with few raters a non-significant result says little, so report the CIs, not just the stars.
