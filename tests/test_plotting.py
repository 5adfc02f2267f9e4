"""The figure style: display names cover every system id, spectrograms are in seconds with a colour bar."""
import matplotlib

matplotlib.use("Agg")   # tests only: no display

import librosa
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import yaml

from presto_lib.config import find_root
from presto_lib.eval.plotting import (CMAP, DISPLAY_NAMES, DPI, display_name, plot_spectrogram, save_figure,
                                      set_theme, spectrogram_grid)

ROOT = find_root()


def _system_ids() -> set[str]:
    """Every system id of profiles/listening.yaml, the sample folders of the pipeline and the results tables."""
    ids = {"reference", "base", "ase", "ase_shift", "ase_budget", "ase_st", "presto_l", "presto_s", "presto_ls"}
    for spec in yaml.safe_load((ROOT / "profiles/listening.yaml").read_text()).values():
        ids |= set((spec or {}).get("systems", {})) | set((spec or {}).get("anchors", {}))
        ids |= set(((spec or {}).get("simulate") or {}).get("quality", {}))
    runs = yaml.safe_load((ROOT / "profiles/presto_s.yaml").read_text())["default"]["runs"]
    ids |= {f"presto_s_{r}" for r in runs}                                   # data/samples/presto_s_<run>
    for table, col in [("listening_test", "system"), ("fig06_presto_l", "system"),
                       ("fig10_presto_l_ablation", "system"), ("fig08_ls_failure_modes", "setup"),
                       ("table1_noise_distributions", "run")]:
        path = ROOT / "results/tables" / f"{table}.csv"
        if path.is_file():
            ids |= set(pd.read_csv(path)[col].astype(str))
    return ids


def test_display_names_cover_every_system_id():
    ids = _system_ids()
    assert {"anchor_lowpass", "anchor_noisy", "presto_s_ls_ittt", "presto_s_dmd_gan"} <= ids
    for s in ids:
        name = display_name(s)
        assert "_" not in name and name != s.replace("_", " "), f"{s!r} has no display name (got {name!r})"
    assert display_name("base") == "Base (DPM-2S)" and display_name("anchor_lowpass") == "Anchor (low-pass)"
    assert display_name("presto_s_ns_itit") == "Presto-S (NS-GAN, ITIT)"
    assert display_name("presto_ls") == "Presto-LS" and DISPLAY_NAMES["presto_s_dmd_gan"] == "DMD-GAN"
    assert len({display_name(s) for s in ids if not s.startswith("presto_s_")} - {"DMD-GAN"}) >= 10


def test_spectrogram_time_axis_in_seconds_with_a_colour_bar_and_the_tone_where_it_belongs():
    set_theme()
    sr, secs, f0 = 16000, 2.5, 1000.0
    t = np.arange(int(sr * secs)) / sr
    wav = 0.5 * np.sin(2 * np.pi * f0 * t) * (t < 1.0)        # tone for the first second only
    fig, ax = plt.subplots()
    im = plot_spectrogram(ax, wav, sr, title="tone")
    assert ax.get_xlim() == pytest.approx((0.0, secs)) and "(s)" in ax.get_xlabel()
    assert len(fig.axes) == 2 and fig.axes[1].get_ylabel() == "power (dB)"       # the colour bar
    assert im.get_cmap().name == CMAP
    S = im.get_array()
    frames = S.shape[1]
    on, off = S[:, : int(0.8 * frames / secs)], S[:, int(1.2 * frames / secs):]
    band = int(np.argmax(on.mean(axis=1)))                      # loudest mel band while the tone plays
    centres = librosa.mel_frequencies(S.shape[0] + 2, fmin=0, fmax=sr / 2)[1:-1]
    assert abs(centres[band] - f0) < 0.1 * f0
    assert on.max() - off.max() > 40                            # silence after 1 s: far below in dB
    # the tick labelled 1k sits on the tone's band
    labels = [tl.get_text() for tl in ax.get_yticklabels()]
    assert abs(ax.get_yticks()[labels.index("1k")] - (band + 0.5)) < 1.5
    plt.close(fig)


def test_grid_shares_one_scale_and_save_figure_uses_the_project_dpi(tmp_path):
    sr = 8000
    rng = np.random.default_rng(0)
    wavs = {"base": [rng.normal(0, 0.1, sr), rng.normal(0, 0.1, sr)], "presto_ls": [rng.normal(0, 0.01, sr)]}
    fig = spectrogram_grid(wavs, sr, captions=["a", "b"])
    images = [a.images[0] for a in fig.axes if a.images]
    assert len(images) == 3 and len({im.get_clim() for im in images}) == 1
    assert fig.axes[0].get_ylabel().startswith("Base (DPM-2S)")
    path = save_figure(fig, "fig_test", folder=tmp_path)
    assert path == tmp_path / "fig_test.png"
    from PIL import Image

    with Image.open(path) as img:
        assert abs(img.info["dpi"][0] - DPI) < 1
    plt.close(fig)
