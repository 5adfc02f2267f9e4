"""PrestoPipeline / export_pretrained / the CLI on tiny random models exported like the pipeline's outputs."""
import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from presto_lib.api import ModelNotFoundError, PrestoPipeline
from presto_lib.checkpoint import CONFIG, load_checkpoint
from presto_lib.config import find_root
from presto_lib.data.latents import LatentNorm
from presto_lib.diffusion.pipeline import TextToMusic
from presto_lib.diffusion.score_model import build_score_model, save_score_model
from presto_lib.distill.presto_l import LayerDropModel, PrestoLConfig, save_layer_drop_model
from presto_lib.distill.presto_s import PrestoSConfig, pingpong_sigmas
from presto_lib.models.text import get_text_encoder
from presto_lib.models.vae import VAE, VAEConfig, save_vae
from presto_lib.pretrained import check_pretrained, default_sources, export_pretrained, read_manifest

torch.set_num_threads(2)
SR, CLIP, C = 8000, 796, 4             # ~0.1 s clips; hop 8 -> 100 latent frames
PROMPTS, BPMS = ["a calm piano piece in C major", "fast drums and bass"], [80.0, 150.0]
PS_CFG = PrestoSConfig()               # continuous generator (p_gen inf)


def _randomise(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Fill the zero-initialised parameters (adaLN, output, budget layers) so every input matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if not p.abs().sum():
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return model.eval()


def _score(te, seed: int):
    torch.manual_seed(seed)
    return _randomise(build_score_model(dict(hidden_size=32, depth=4, num_heads=4, mlp_ratio=2.0),
                                        in_channels=C, text_dim=te.dim), seed)


@pytest.fixture(scope="module")
def te():
    return get_text_encoder()


@pytest.fixture(scope="module")
def outputs(tmp_path_factory, te):
    """A fake repository root: the five checkpoints at their pipeline paths and a dvc.lock naming their outputs."""
    root = tmp_path_factory.mktemp("repo")
    src = {k: root / s.path for k, s in default_sources().items()}
    torch.manual_seed(0)
    save_vae(VAE(VAEConfig(sample_rate=SR, strides=[2, 4], latent_dim=C, encoder_dim=4, decoder_dim=16)).eval(),
             src["vae"])
    norm = LatentNorm(2.0, [0.5, -1.0, 0.0, 2.0], [0.1, 0.2, 1.0, 3.0])
    extra = {"latent_frames": -(-CLIP // 8), "sample_rate": SR, "clip_samples": CLIP, "latent_norm": norm.to_dict()}
    save_score_model(src["base"], _score(te, 1), extra)
    save_layer_drop_model(src["presto_l"], _randomise(LayerDropModel(_score(te, 2), PrestoLConfig()), 2), extra)
    save_score_model(src["presto_s"], _score(te, 3), {**extra, "presto_s": PS_CFG.to_dict()})
    ls = _randomise(LayerDropModel(_score(te, 4), PrestoLConfig(schedule="presto_ls")), 4)
    save_layer_drop_model(src["presto_ls"], ls, {**extra, "presto_s": PS_CFG.to_dict()})
    outs = {"vae": "data/vae", "base": "data/base", "presto_l_finetune@presto_l": "data/presto_l/presto_l",
            "presto_s_run@ls_ittt": "data/presto_s/ls_ittt", "presto_ls_distill": "data/presto_ls/presto_ls"}
    lock = {"schema": "2.0", "stages": {st: {"cmd": "x", "outs": [{"path": p, "md5": f"{i:032x}.dir"}]}
                                        for i, (st, p) in enumerate(outs.items())}}
    (root / "dvc.lock").write_text(yaml.safe_dump(lock))
    return root


@pytest.fixture(scope="module")
def exported(outputs, tmp_path_factory):
    out = tmp_path_factory.mktemp("pretrained") / "tiny"
    export_pretrained(None, out, root=outputs, steps={"base": 3, "presto_l": 3})
    return out


@pytest.fixture(scope="module")
def pipes(exported, outputs, te):
    return (PrestoPipeline.from_pretrained(exported, text_encoder=te),
            PrestoPipeline.from_outputs(outputs, text_encoder=te))


# ---- export and the manifest ---------------------------------------------------------------------

def test_export_writes_half_precision_and_a_manifest_tied_to_dvc_lock(exported, outputs):
    m = read_manifest(exported)
    assert set(m["models"]) == {"vae", "base", "presto_l", "presto_s", "presto_ls"} and m["dtype"] == "float16"
    for name, entry in m["models"].items():
        tensors, _ = load_checkpoint(exported / name)
        src, _ = load_checkpoint(outputs / entry["source"]["path"])
        assert {t.dtype for t in tensors.values() if t.is_floating_point()} == {torch.float16}
        for k, v in src.items():            # fp16 of the source within half-precision rounding
            torch.testing.assert_close(tensors[k].float(), v, rtol=1e-3, atol=1e-4)
        nbytes = lambda ts: sum(t.numel() * t.element_size() for t in ts.values())
        assert nbytes(tensors) == nbytes(src) // 2
    assert m["models"]["base"]["source"]["dvc"] == {"stage": "base", "out": "data/base", "md5": f"{1:032x}.dir"}
    assert m["models"]["presto_ls"]["source"]["stage"] == "presto_ls_distill"
    assert m["models"]["presto_ls"]["default_steps"] == 4 and m["models"]["base"]["default_steps"] == 3
    assert check_pretrained(exported, outputs / "dvc.lock") == []


def test_check_pretrained_finds_changed_files_and_a_changed_lock(exported, outputs, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(exported, copy)
    cfg = json.loads((copy / "base" / CONFIG).read_text())
    (copy / "base" / CONFIG).write_text(json.dumps({**cfg, "latent_frames": 1}))
    lock = yaml.safe_load((outputs / "dvc.lock").read_text())
    lock["stages"]["presto_ls_distill"]["outs"][0]["md5"] = "f" * 32 + ".dir"     # retrained since the export
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(lock))
    problems = check_pretrained(copy, tmp_path / "dvc.lock")
    assert len(problems) == 2
    assert "base/config.json" in problems[0] and "presto_ls" in problems[1] and "data/presto_ls/presto_ls" in problems[1]


def test_export_refuses_a_folder_without_vae_or_model(outputs, tmp_path):
    with pytest.raises(ValueError, match="VAE"):
        export_pretrained({"base": "data/base/model"}, tmp_path / "x", root=outputs)
    with pytest.raises(ModelNotFoundError, match="dvc repro presto_l_finetune@presto_l"):
        export_pretrained({"vae": "data/vae", "presto_l": "data/nowhere"}, tmp_path / "x", root=outputs)


def test_committed_pretrained_weights_match_dvc_lock():
    """Every committed pretrained/<profile>/ folder matches its files and the repository's dvc.lock."""
    root = find_root()
    folders = sorted(p.parent for p in (root / "pretrained").glob("*/manifest.json"))
    if not folders:
        pytest.skip("no pretrained folder committed yet")
    for f in folders:
        assert check_pretrained(f, root / "dvc.lock") == [], f


# ---- generation ----------------------------------------------------------------------------------

@pytest.mark.parametrize("model", ["base", "presto_l", "presto_s", "presto_ls"])
def test_every_model_generates_finite_audio_close_to_full_precision(pipes, model):
    half, full = pipes
    audio, sr = half(PROMPTS, bpm=BPMS, model=model, seed=5)
    ref, sr_ref = full(PROMPTS, bpm=BPMS, model=model, seed=5, steps=half.default_steps[model])
    assert sr == sr_ref == SR and audio.shape == (2, CLIP) and audio.dtype == np.float32
    assert np.isfinite(audio).all() and audio.std() > 1e-4
    err = np.linalg.norm(audio - ref) / np.linalg.norm(ref)
    assert err < 5e-3, err                                   # half-precision weights, same seeds
    other, _ = full(PROMPTS, bpm=BPMS, model=model, seed=6, steps=half.default_steps[model])
    assert np.linalg.norm(other - ref) / np.linalg.norm(ref) > 10 * err    # the bound above can fail


def test_base_matches_text_to_music_and_is_batch_independent(pipes, outputs, te):
    _, full = pipes
    t2m = TextToMusic.from_checkpoints(outputs / "data/base/model", outputs / "data/vae", text_encoder=te)
    ref = t2m.generate(PROMPTS, BPMS, seeds=[7, 8], steps=3)[:, 0].numpy()
    audio, _ = full(PROMPTS, bpm=BPMS, model="base", steps=3, seed=7)
    np.testing.assert_allclose(audio, ref, rtol=1e-5, atol=1e-6)
    alone, _ = full(PROMPTS[1], bpm=BPMS[1], model="base", steps=3, seed=8)
    np.testing.assert_allclose(alone[0], audio[1], rtol=1e-4, atol=1e-5)


def test_generator_is_ping_pong_from_per_sample_seeds(pipes, outputs, te):
    """Reference: sec. 3.1 ping-pong written out, x <- G(x, s) + s' z, noise drawn from seed and seed + 1."""
    _, full = pipes
    t2m = full.model("presto_s")
    G = t2m.model
    sig = pingpong_sigmas(2, PS_CFG.sigma_min, PS_CFG.sigma_max, PS_CFG.rho)
    cond, _ = t2m.conditions(PROMPTS[:1], BPMS[:1])
    x = torch.randn(t2m.latent_shape, generator=torch.Generator().manual_seed(3))[None] * sig[0]
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():
        x = G(x, sig[0].expand(1), cond) + sig[1] * torch.randn(t2m.latent_shape, generator=g)[None]
        x = G(x, sig[1].expand(1), cond)                       # the last step returns the denoised estimate
    ref = t2m.decode(x)[:, 0].numpy()
    audio, _ = full(PROMPTS[:1], bpm=BPMS[:1], model="presto_s", steps=2, seed=3)
    np.testing.assert_allclose(audio, ref, rtol=1e-4, atol=1e-5)


def test_missing_models_name_the_stage_that_makes_them(outputs, tmp_path, te):
    out = tmp_path / "partial"
    export_pretrained({"vae": "data/vae", "presto_ls": "data/presto_ls/presto_ls/generator"}, out, root=outputs)
    pipe = PrestoPipeline.from_pretrained(out, text_encoder=te)
    assert pipe.available == ("presto_ls",)
    with pytest.raises(ModelNotFoundError, match=r"dvc repro presto_l_finetune@presto_l"):
        pipe(PROMPTS, model="presto_l")
    with pytest.raises(ValueError, match="unknown model"):
        pipe(PROMPTS, model="presto_xl")
    with pytest.raises(ValueError, match="bpm"):
        pipe(PROMPTS, bpm=[90.0, 100.0, 110.0])
    import shutil

    bare = tmp_path / "bare"
    shutil.copytree(outputs / "data/vae", bare / "data/vae")
    with pytest.raises(ModelNotFoundError, match=r"dvc repro presto_s_run@ls_ittt"):
        PrestoPipeline.from_outputs(bare, text_encoder=te)(PROMPTS, model="presto_s")
    with pytest.raises(ModelNotFoundError, match=r"dvc repro vae"):
        PrestoPipeline.from_outputs(tmp_path / "nothing")
    if not (find_root() / "pretrained" / "paper").is_dir():
        with pytest.raises(ModelNotFoundError, match="presto_lib export"):
            PrestoPipeline.from_pretrained("paper")


# ---- the CLI -------------------------------------------------------------------------------------

def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "presto_lib", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def test_cli_generate_writes_the_wav_the_api_makes(exported, pipes, tmp_path):
    r = _cli("generate", "--prompt", PROMPTS[0], "--bpm", 80, "--model", "presto_ls", "--steps", 2, "--seed", 3,
             "--out", tmp_path / "out.wav", "--weights", exported)
    assert r.returncode == 0, r.stderr
    assert "presto_ls" in r.stderr and r.stdout.strip().endswith("out.wav")      # progress on stderr
    wav, sr = sf.read(tmp_path / "out.wav", dtype="float32")
    ref, _ = pipes[0](PROMPTS[0], bpm=80, model="presto_ls", steps=2, seed=3)
    assert sr == SR and wav.shape == (CLIP,)
    np.testing.assert_allclose(wav, np.clip(ref[0], -1, 1), atol=1.5 / 2**15)     # 16-bit PCM


def test_cli_help_and_clear_errors(exported, tmp_path):
    r = _cli("--help")
    assert r.returncode == 0 and "generate" in r.stdout
    r = _cli("generate", "--help")
    assert r.returncode == 0 and "--prompt" in r.stdout and "--weights" in r.stdout
    r = _cli("generate", "--prompt", "x", "--model", "presto_l", "--out", tmp_path / "a.wav", "--weights", exported,
             "--steps", 1)
    assert r.returncode == 0, r.stderr
    partial = tmp_path / "partial"
    export_pretrained({"vae": exported / "vae", "presto_ls": exported / "presto_ls"}, partial, lock=None)
    r = _cli("generate", "--prompt", "x", "--model", "base", "--out", tmp_path / "b.wav", "--weights", partial)
    assert r.returncode == 2 and "dvc repro base" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "b.wav").exists()
    r = _cli("generate", "--prompt", "x", "--out", tmp_path / "c.wav", "--weights", tmp_path / "nowhere")
    assert r.returncode == 2 and "Traceback" not in r.stderr


def test_the_pretrained_stage_writes_where_the_lock_check_looks():
    """The `pretrained` stage's output is pretrained/<profile>/, the folders the test above checks against dvc.lock."""
    from pathlib import Path

    from presto_lib.pretrained import PRETRAINED_DIR
    from presto_lib.stages import pretrained as stage
    from presto_lib.stages.registry import PRETRAINED, STAGES

    spec = next(s for s in STAGES if s.name == "pretrained")
    assert spec.results == (PRETRAINED,) and PRETRAINED == f"{PRETRAINED_DIR}/${{profile}}"
    assert stage.out_dir("cpu") == Path(PRETRAINED_DIR) / "cpu"
    sources = default_sources()
    for m in stage.MODELS:                        # every exported model's source is a data dep of the stage
        assert any(sources[m].path == d or sources[m].path.startswith(d + "/") for d in spec.deps), m


def test_the_pretrained_stage_exports_vae_base_and_presto_ls_in_sync_with_dvc_lock(outputs, monkeypatch):
    """`python -m presto_lib.stages.pretrained` on the pipeline's outputs: float16, manifest tied to dvc.lock."""
    import shutil

    from presto_lib.stages import pretrained as stage

    for d in ("profiles", "presto_lib"):                    # what find_root() recognises as a project root
        (outputs / d).mkdir(exist_ok=True)
    shutil.copy(find_root() / "params.yaml", outputs / "params.yaml")
    monkeypatch.chdir(outputs)
    assert stage.main([]) == 0
    out = outputs / "pretrained" / yaml.safe_load((outputs / "params.yaml").read_text())["profile"]
    m = read_manifest(out)
    assert set(m["models"]) == set(stage.MODELS) and m["dtype"] == "float16"
    assert check_pretrained(out, outputs / "dvc.lock") == []
    assert m["models"]["presto_ls"]["source"]["dvc"]["stage"] == "presto_ls_distill"
