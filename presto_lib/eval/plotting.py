"""One figure style for every notebook and results figure: theme, display names, spectrograms, saving.

    from presto_lib.eval.plotting import set_theme, display_name, plot_spectrogram, save_figure
    set_theme()
    fig, ax = plt.subplots(figsize=FIGSIZE)
    plot_spectrogram(ax, wav, sr, title=display_name("presto_ls"))
    save_figure(fig, "fig11_spectrograms")              # results/figures/fig11_spectrograms.png at DPI

The theme is seaborn's "whitegrid" when seaborn is installed, else the same look from matplotlib rcParams alone
(seaborn is not a requirement). Spectrograms: log-mel power in dB, one colormap (`CMAP`), time in seconds,
frequency ticks in Hz on the mel axis, a colour bar. System ids (sample folders, table rows, listening-test
systems) map to the paper's names through one table, `DISPLAY_NAMES`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

__all__ = ["CMAP", "DPI", "FIGSIZE", "PALETTE", "DISPLAY_NAMES", "display_name", "set_theme", "mel_db",
           "plot_spectrogram", "spectrogram_grid", "save_figure"]

CMAP = "magma"                 # every spectrogram
DPI = 150                      # every saved figure
FIGSIZE = (6.4, 3.6)           # one panel; grids scale from PANEL
PANEL = (3.2, 2.4)
PALETTE = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C", "#CCB974",
           "#64B5CD"]          # seaborn "deep", so the two themes colour lines alike

# ---- display names -------------------------------------------------------------------------------

DISPLAY_NAMES: dict[str, str] = {
    # listening test (Fig. 12) and demo page
    "reference": "Reference (real)",
    "anchor_lowpass": "Anchor (low-pass)",
    "anchor_noisy": "Anchor (noisy)",
    "vae": "VAE reconstruction",
    # Table 2 and the sample folders data/samples/<system>
    "base": "Base (DPM-2S)",
    "ase": "ASE",
    "ase_shift": "ASE + shift",
    "ase_budget": "ASE + budget",
    "ase_st": "ASE + self-teacher",
    "presto_l": "Presto-L",
    "presto_s": "Presto-S",
    "presto_ls": "Presto-LS",
    "dmd_gan": "DMD-GAN",
    "presto_s_dmd_gan": "DMD-GAN",
    "presto_s_discrete": "Presto-S (discrete)",
    "cm": "CM",
    "soundctm": "SoundCTM",
    "ditto_ctm": "DITTO-CTM",
    # Fig. 8 setups (A.4)
    "ls_lfake": "LS with L-Fake/Real",
    "step_then_layer": "Step then Layer",
    "step_and_layer": "Step and Layer (joint)",
}
_GAN = {"ls": "LSGAN", "ns": "NS-GAN"}


def display_name(system: str) -> str:
    """The paper's name of a system id; Presto-S runs `presto_s_<gan>_<pppp>` read as Table 1 rows."""
    if system in DISPLAY_NAMES:
        return DISPLAY_NAMES[system]
    run = system.removeprefix("presto_s_")
    gan, _, dists = run.partition("_")
    if gan in _GAN and len(dists) == 4 and set(dists) <= {"i", "t"}:
        # Table 1: p_gen, p_DMD, p_DSM, p_GAN each the inference (I) or training (T) distribution
        return f"Presto-S ({_GAN[gan]}, {dists.upper()})"
    if run.startswith("discrete_") and run.removeprefix("discrete_").isdigit():   # one discrete model per budget
        return f"Presto-S (discrete, {run.removeprefix('discrete_')}-step)"
    if system.startswith("presto_ls_rho"):
        return f"Presto-LS (rho = {system.removeprefix('presto_ls_rho').replace('_', '.')})"
    return system.replace("_", " ")


# ---- theme ---------------------------------------------------------------------------------------

def _rc() -> dict[str, Any]:
    """The rcParams of the theme (seaborn whitegrid's look, our dpi and colormap)."""
    from cycler import cycler

    return {"figure.dpi": 100, "savefig.dpi": DPI, "savefig.bbox": "tight", "figure.figsize": FIGSIZE,
            "image.cmap": CMAP, "axes.prop_cycle": cycler(color=PALETTE),
            "axes.facecolor": "white", "axes.edgecolor": "#cccccc", "axes.grid": True, "grid.color": "#e5e5e5",
            "axes.spines.top": False, "axes.spines.right": False, "axes.titlesize": 10, "axes.labelsize": 9,
            "xtick.labelsize": 8, "ytick.labelsize": 8, "legend.fontsize": 8, "legend.frameon": False,
            "font.size": 9}


def set_theme() -> None:
    """Apply the project's figure style (seaborn whitegrid if installed, else matplotlib rcParams only)."""
    import matplotlib as mpl

    try:
        import seaborn as sns

        sns.set_theme(style="whitegrid", palette=PALETTE)
    except ImportError:
        pass
    mpl.rcParams.update(_rc())


# ---- spectrograms --------------------------------------------------------------------------------

def mel_db(wav: Any, sample_rate: int, n_mels: int = 64, hop_length: int | None = None) -> tuple[np.ndarray, int]:
    """(log-mel power in dB [n_mels, frames], hop) of mono audio; n_fft and hop follow the sample rate."""
    from presto_lib.audio import mel_spectrogram

    x = np.asarray(wav, dtype=np.float32).reshape(-1)
    n_fft = 1024 if sample_rate > 16000 else 512
    hop = int(hop_length or n_fft // 4)
    mel = mel_spectrogram(x, sample_rate, n_fft=n_fft, hop_length=hop, n_mels=n_mels, clamp=1e-10)
    return mel.numpy() * (10.0 / np.log(10.0)), hop       # natural log -> dB


def plot_spectrogram(ax: Any, wav: Any, sample_rate: int, *, title: str | None = None, n_mels: int = 64,
                     vmin: float | None = None, vmax: float | None = None, colorbar: bool = True,
                     ylabel: bool = True) -> Any:
    """Log-mel spectrogram on `ax`: time in seconds, frequency (Hz ticks) on mel bands, colour bar; the image."""
    import librosa

    S, hop = mel_db(wav, sample_rate, n_mels)
    seconds = np.asarray(wav).reshape(-1).shape[0] / sample_rate
    if vmax is None:
        vmax = float(S.max())
    if vmin is None:
        vmin = vmax - 80.0                                # 80 dB of dynamic range
    im = ax.imshow(S, origin="lower", aspect="auto", cmap=CMAP, vmin=vmin, vmax=vmax,
                   extent=[0.0, seconds, 0, n_mels], interpolation="nearest")
    centres = librosa.mel_frequencies(n_mels + 2, fmin=0.0, fmax=sample_rate / 2)[1:-1]
    ticks = [f for f in (0, 250, 500, 1000, 2000, 4000, 8000, 16000) if f <= centres[-1]]
    ax.set_yticks(np.interp(ticks, centres, np.arange(n_mels) + 0.5))
    ax.set_yticklabels([f"{f / 1000:g}k" if f >= 1000 else str(f) for f in ticks])
    ax.set_xlabel("time (s)")
    if ylabel:
        ax.set_ylabel("frequency (Hz)")
    ax.grid(False)
    if title:
        ax.set_title(title)
    if colorbar:
        ax.figure.colorbar(im, ax=ax, label="power (dB)", pad=0.02)
    return im


def spectrogram_grid(wavs: Mapping[str, Sequence[Any]] | Mapping[str, Any], sample_rate: int, *,
                     ncols: int | None = None, captions: Sequence[str] | None = None) -> Any:
    """Rows of spectrograms {row label: [wav, ...]} on one shared dB scale and one colour bar; the figure."""
    import matplotlib.pyplot as plt

    rows = {k: list(v) if isinstance(v, (list, tuple)) else [v] for k, v in wavs.items()}
    ncols = ncols or max(len(v) for v in rows.values())
    vmax = max(mel_db(w, sample_rate)[0].max() for v in rows.values() for w in v)
    fig, axes = plt.subplots(len(rows), ncols, figsize=(PANEL[0] * ncols, PANEL[1] * len(rows)), squeeze=False,
                             sharex=True, sharey=True, layout="constrained")
    im = None
    for r, (label, ws) in enumerate(rows.items()):
        for c in range(ncols):
            ax = axes[r, c]
            if c >= len(ws):
                ax.axis("off")
                continue
            title = captions[c] if (captions is not None and r == 0 and c < len(captions)) else None
            im = plot_spectrogram(ax, ws[c], sample_rate, title=title, vmin=vmax - 80.0, vmax=vmax,
                                  colorbar=False, ylabel=c == 0)
            if c == 0:
                ax.set_ylabel(f"{display_name(label)}\nfrequency (Hz)")
            if r < len(rows) - 1:
                ax.set_xlabel("")
    if im is not None:
        fig.colorbar(im, ax=axes, label="power (dB)", shrink=0.8, pad=0.01)
    return fig


# ---- saving --------------------------------------------------------------------------------------

def save_figure(fig: Any, name: str | os.PathLike, folder: str | os.PathLike = "results/figures",
                dpi: int = DPI) -> Path:
    """Save a figure as PNG at the project dpi: a bare name goes to `folder`/name.png; returns the path."""
    path = Path(name)
    if path.parent == Path("."):
        path = Path(folder) / path
    path = path.with_suffix(path.suffix or ".png")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight", facecolor="white")
    return path
