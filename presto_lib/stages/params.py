"""Typed stage params: one frozen dataclass per params group, built from params.yaml with checks.

    T = typed_params(P)               # {group: dataclass}; raises ParamsError naming group and key
    T["base"].steps, T["presto_s"].train.lr_generator

Rules (the same for every group): every key of the group must be a field (unknown keys are rejected, so a typo
such as `base.stepz` fails instead of being ignored) and every field must be given: the defaults live in
profiles/*.yaml only. Values are coerced to the field's type: numbers written as YAML strings ("3e-4") become
floats, whole floats (30.0) become ints, but 30.7 for an int, a string for a bool or a list for a number is an
error. Range checks come from field metadata (`steps >= 1`, batch sizes >= 1, learning rates > 0, EMA decay in
[0, 1]). `stages.common.start` validates every group and hands stages the coerced values.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from presto_lib.stages.typed import Group, ParamsError, _F

__all__ = ["ParamsError", "Group", "GROUPS", "typed_params", "coerced_params"]


@dataclass(frozen=True)
class CommonParams(Group):
    """params `common`."""
    seed: int = _F(min=0)
    sample_rate: int = _F(min=1)
    clip_seconds: float = _F(gt=0)
    channels: int = _F(min=1)
    results: str


@dataclass(frozen=True)
class EdmParams(Group):
    """params `edm`."""
    sigma_data: float = _F(gt=0)
    p_mean: float
    p_std: float = _F(gt=0)
    sigma_min: float = _F(gt=0)
    sigma_max: float = _F(gt=0)
    rho: float = _F(gt=0)
    fig_samples: int
    toy_steps: list[int]
    toy_samples: int
    toy_ref_steps: int
    toy_modes: int
    toy_mode_std: float
    guide_steps: int
    cfg_weights: list[float]
    cfgpp_weights: list[float]


@dataclass(frozen=True)
class CorpusParams(Group):
    """params `corpus`."""
    out_dir: str
    music21: bool
    styles: list
    midi_dirs: list
    max_pieces_per_style: int
    max_clips_per_style: int
    max_clips_per_render: int
    max_renders_per_piece: int
    augmentations: int
    augment_splits: list[str]
    transpose_range: list[int]
    tempo_range: list[float]
    max_repeats: int
    min_notes: int
    max_notes: int
    splits: dict
    target_lufs: float
    silence_db: float
    max_silent_frac: float
    soundfont: str
    gain: float
    workers: int = _F(min=0)
    n_examples: int


@dataclass(frozen=True)
class VaeParams(Group):
    """params `vae`."""
    out_dir: str
    strides: list[int]
    latent_dim: int
    encoder_dim: int
    decoder_dim: int
    input_gain: float
    periods: list[int]
    fft_sizes: list[int]
    mpd_channels: int
    mrd_channels: int
    mel_weight: float
    feat_weight: float
    gen_weight: float
    kl_weight: float = _F(min=0)
    mel_windows: list[int]
    mel_bins: list[int]
    lr: float = _F(gt=0)
    betas: list[float]
    lr_gamma: float
    grad_clip_gen: float
    grad_clip_disc: float
    ema_decay: float = _F(min=0, max=1)
    batch_size: int = _F(min=1)
    segment_seconds: float
    steps: int = _F(min=1)
    gan_start: int = _F(min=0)
    ckpt_every: int = _F(min=1)
    log_every: int = _F(min=1)
    num_workers: int = _F(min=0)
    threads: int = _F(min=1)
    scale_clips: int = _F(min=1)
    eval_clips: int = _F(min=1)


@dataclass(frozen=True)
class MetricsParams(Group):
    """params `metrics`."""
    manifest: str
    reference_split: str
    floor_split: str
    backbone: str
    musicnn_hop_s: float
    clap_path: str | None
    k: int = _F(min=1)
    n_boot: int = _F(min=0)
    corpus_clap: dict
    sanity: dict


@dataclass(frozen=True)
class BaseParams(Group):
    """params `base`."""
    manifest: str
    vae: str
    latents: str
    out_dir: str
    metrics_dir: str
    samples_dir: str
    encode_batch_size: int = _F(min=1)
    sample_posterior: bool
    latent_std: float = _F(gt=0)
    latent_spread: str                     # "std" or "mad" (data.latents.LatentNorm.fit checks it)
    dit: dict
    cond_dropout: float = _F(min=0, max=1)
    tempo_free_p: float = _F(min=0, max=1)
    lr: float = _F(gt=0)
    betas: list[float]
    warmup_steps: int = _F(min=0)
    batch_size: int = _F(min=1)
    steps: int = _F(min=1)
    grad_clip: float = _F(min=0)
    ema_decay: float = _F(min=0, max=1)
    ckpt_every: int = _F(min=1)
    keep_checkpoints: int = _F(min=1)
    log_every: int = _F(min=1)
    num_workers: int = _F(min=0)
    sampler: str
    sample_steps: int = _F(min=1)
    guidance: str
    cfg_weight: float
    gen_batch_size: int = _F(min=1)
    eval_prompts: int | None = _F(min=1)
    preview: int = _F(min=1)
    bpm_check: dict
    latency_repeats: int = _F(min=1)


@dataclass(frozen=True)
class PrestoLParams(Group):
    """params `presto_l`."""
    base_model: str
    vae: str
    latents: str
    manifest: str
    metrics_dir: str
    out_dir: str
    samples_dir: str
    schedule: str | list
    ref_depth: int
    st_weight: float
    sigma_dist: str
    sigma_mix: float = _F(min=0, max=1)
    cond_dropout: float = _F(min=0, max=1)
    lr: float = _F(gt=0)
    batch_size: int = _F(min=1)
    steps: int = _F(min=1)
    grad_clip: float = _F(min=0)
    ema_decay: float = _F(min=0, max=1)
    ckpt_every: int = _F(min=1)
    log_every: int = _F(min=1)
    eval_prompts: int | None = _F(min=1)
    eval_steps: list[int]
    table_prompts: int | None = _F(min=1)
    table_steps: int | None = _F(min=1)
    gen_batch_size: int = _F(min=1)
    variance_sigmas: list[float]
    variance_clips: int = _F(min=1)
    latency_repeats: int = _F(min=1)


@dataclass(frozen=True)
class PrestoSTrain(Group):
    """params `presto_s.train`."""
    iterations: int = _F(min=1)
    batch_size: int = _F(min=1)
    crop_frames: int = _F(min=0)
    lr_generator: float = _F(gt=0)
    lr_fake: float = _F(gt=0)
    optimizer: str
    grad_clip: float = _F(min=0)
    ema_decay: float = _F(min=0, max=1)
    ckpt_every: int = _F(min=1)
    log_every: int = _F(min=1)
    checkpoint_blocks: bool


@dataclass(frozen=True)
class PrestoSParams(Group):
    """params `presto_s`."""
    base_model: str
    vae: str
    latents: str
    manifest: str
    metrics_dir: str
    out_dir: str
    samples_dir: str
    algorithm: dict
    head: dict
    runs: dict
    presto_s_run: str
    discrete_run: str
    dmd_gan_run: str
    curve_runs: list[str]
    train: PrestoSTrain
    eval_prompts: int | None = _F(min=1)
    table_prompts: int | None = _F(min=1)
    eval_steps: list[int]
    table_steps: int = _F(min=1)
    gen_batch_size: int = _F(min=1)
    fig11_prompts: int = _F(min=1)
    latency_repeats: int = _F(min=1)
    toy: dict


@dataclass(frozen=True)
class PrestoLsParams(Group):
    """params `presto_ls`."""
    presto_s_run: str
    schedule: str | list
    layer_steps: int | None = _F(min=1)
    iterations: int | None = _F(min=1)
    table_steps: int | None = _F(min=1)
    fig8_setups: list[str]
    fig8_iterations: int = _F(min=1)
    fig8_last: int
    layer_weight: float = _F(min=0)
    base_steps: int | None = _F(min=1)
    latency_repeats: int = _F(min=1)
    latency_prompt: int = _F(min=0)


@dataclass(frozen=True)
class ListeningParams(Group):
    """params `listening`."""
    manifest: str
    kit_dir: str
    ratings: str
    n_sets: int = _F(min=1)
    excerpt_seconds: float | None
    target_lufs: float
    reference: bool
    anchors: dict
    systems: dict
    chosen: str
    unit: str
    alternative: str
    alpha: float
    simulate: dict


@dataclass(frozen=True)
class ArtefactsParams(Group):
    """params `artefacts` (Fig. 9, Fig. 13, the 79-NFE base row, Tables 3-4)."""
    rho_values: list[float]
    rho_prompt: int = _F(min=0)
    rho_seeds: list[int]
    rho_steps: int | None = _F(min=1)
    rejection_k: int = _F(min=1)
    rejection_prompts: int | None = _F(min=1)
    rejection_ratios: list[float]
    rejection_tolerance: float = _F(min=0)
    base_paper_steps: int = _F(min=1)
    latency_warmup: int = _F(min=0)
    latency_repeats: int = _F(min=1)
    memory_cap_gb: float = _F(gt=0)
    batch_limit: int = _F(min=1)


@dataclass(frozen=True)
class M2sParams(Group):
    """params `m2s` (mono-to-stereo model and its stereo renders)."""
    out_dir: str
    styles: list[str]
    max_pieces_per_style: int = _F(min=1)
    max_clips_per_style: int = _F(min=1)
    pan_spread: float = _F(min=0, max=1)
    n_fft: int = _F(min=4)
    hop_length: int = _F(min=1)
    channels: int = _F(min=1)
    layers: int = _F(min=1)
    lr: float = _F(gt=0)
    batch_size: int = _F(min=1)
    steps: int = _F(min=1)
    segment_s: float = _F(min=0)
    side_weight: float = _F(min=0)
    stft_weight: float = _F(min=0)
    grad_clip: float = _F(min=0)
    ema_decay: float = _F(min=0, max=1)
    ckpt_every: int = _F(min=1)
    log_every: int = _F(min=1)
    examples: int = _F(min=0)


@dataclass(frozen=True)
class CurvesParams(Group):
    """params `curves` (learning curves, `stages.learning_curve`)."""
    points: int = _F(min=0)
    clips: int = _F(min=1)


@dataclass(frozen=True)
class ConsistencyTrain(Group):
    """params `consistency.train`."""
    iterations: int = _F(min=1)
    batch_size: int = _F(min=1)
    crop_frames: int = _F(min=0)
    lr: float = _F(gt=0)
    betas: list[float]
    ema_decay: float = _F(min=0, max=1)
    grad_clip: float = _F(min=0)
    ckpt_every: int = _F(min=1)
    log_every: int = _F(min=1)


@dataclass(frozen=True)
class ConsistencyParams(Group):
    """params `consistency` (CM, SoundCTM, DITTO-CTM: the consistency rows of Table 2)."""
    base_model: str
    vae: str
    latents: str
    manifest: str
    metrics_dir: str
    out_dir: str
    samples_dir: str
    runs: dict
    train: ConsistencyTrain
    table_prompts: int | None = _F(min=1)
    table_steps: int = _F(min=1)
    gen_batch_size: int = _F(min=1)
    latency_repeats: int = _F(min=1)
    listen_prompts: int = _F(min=1)
    toy: dict


GROUPS: dict[str, type[Group]] = {"common": CommonParams, "edm": EdmParams, "corpus": CorpusParams, "vae": VaeParams,
                                  "metrics": MetricsParams, "base": BaseParams, "presto_l": PrestoLParams,
                                  "presto_s": PrestoSParams, "presto_ls": PrestoLsParams,
                                  "listening": ListeningParams, "artefacts": ArtefactsParams, "m2s": M2sParams,
                                  "curves": CurvesParams, "consistency": ConsistencyParams}


def typed_params(P: dict[str, Any]) -> dict[str, Group]:
    """Every group of a params dict as its dataclass; an unknown group is an error too."""
    unknown = sorted(set(P) - set(GROUPS) - {"profile"})
    if unknown:
        raise ParamsError(f"unknown params group {unknown[0]!r}; known groups: {', '.join(GROUPS)}")
    return {g: cls.from_dict(P[g], g) for g, cls in GROUPS.items() if g in P}


def coerced_params(P: dict[str, Any]) -> dict[str, Any]:
    """The params dict with every value validated and coerced (what stages read)."""
    return {"profile": P.get("profile"), **{g: t.to_dict() for g, t in typed_params(P).items()}}
