"""The distillation trials in benchmarks/: distill_budget.py's params change only the two budgets, it regenerates only
the two Table 2 folders' evaluations, and its verdicts follow planted effects in synthetic per-clip data;
teacher_guidance.py samples with plain CFG and judges Presto-S against each guided base model; presto_s_levers.py
changes only the keys a lever names, writes each lever under its own folder and judges it by planted effects."""
import copy
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from presto_lib.eval import claims as C
from presto_lib.eval.evaluate import eval_key, save_clip_data
from presto_lib.stages import claims as S

ROOT = Path(__file__).resolve().parents[1]
N, D = 48, 4


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _budget():
    return _load("distill_budget")


def _params() -> dict:
    return {"presto_s": {"samples_dir": "data/samples", "presto_s_run": "tr", "dmd_gan_run": "dmd_gan",
                         "train": {"iterations": 300, "batch_size": 4}, "table_steps": 4},
            "presto_ls": {"presto_s_run": "tr", "iterations": None}, "base": {"steps": 1500}}


def test_budget_params_change_only_the_two_budgets():
    B, P = _budget(), _params()
    before = copy.deepcopy(P)
    Q = B.budget_params(P, 1200)
    assert P == before                                            # the input is not modified
    assert Q["presto_s"]["train"]["iterations"] == 1200 and Q["presto_ls"]["iterations"] == 1200
    Q["presto_s"]["train"]["iterations"], Q["presto_ls"]["iterations"] = 300, None
    assert Q == P
    with pytest.raises(ValueError):
        B.budget_params(P, 0)


def test_only_the_regenerated_folders_are_stale(tmp_path):
    B = _budget()
    d = {"audio": np.zeros((2, D)), "clap": np.zeros(2), "prompt": np.array(["a", "b"]), "seed": np.arange(2)}
    for stage, folder in (("presto_s", "data/samples/presto_s_tr"), ("presto_s", "data/samples/presto_s_dmd_gan"),
                          ("presto_ls", "data/samples/presto_ls"), ("base", "data/samples/base"),
                          ("presto_s", "data/presto_s/tr/steps_4")):
        save_clip_data(tmp_path / stage / f"{eval_key(folder)}.npz", d)
    stale = B.stale_evaluations(_params(), tmp_path)
    assert sorted(p.stem for p in stale) == ["samples__presto_ls", "samples__presto_s_tr"]


def _inputs(tmp_path, shifts: dict[str, float], seed: int = 0):
    """Saved evaluations whose embeddings sit `shift` from the reference (0 = as good as the reference)."""
    rng = np.random.default_rng(seed)
    prompts = np.array([f"prompt {i}" for i in range(N)])
    for folder, shift in shifts.items():
        stage = "base" if folder.endswith("base") else "presto_s"
        save_clip_data(tmp_path / "ev" / stage / f"{eval_key(folder)}.npz",
                       {"audio": rng.normal(size=(N, D)) + shift, "clap": 30 - 5 * shift + rng.normal(size=N),
                        "prompt": prompts, "seed": np.arange(N)})
    return S.Inputs(_params(), tmp_path / "results", rng.normal(size=(200, D)), eval_root=tmp_path / "ev",
                    root=tmp_path)


@pytest.mark.parametrize("ls_shift,base_shift,c15", [(1.5, 0.0, C.CONTRADICTED), (0.0, 1.5, C.REPRODUCED)])
def test_judge_follows_planted_effects(tmp_path, ls_shift, base_shift, c15):
    B = _budget()
    I = _inputs(tmp_path, {"data/samples/presto_s_tr": 0.0, "data/samples/presto_s_dmd_gan": 1.5,
                           "data/samples/presto_ls": ls_shift, "data/samples/base": base_shift})
    df = B.judge(I, 300)
    verdicts = df.groupby("claim")["claim verdict"].first()
    assert verdicts["C7"] == C.REPRODUCED                      # Presto-S beats DMD-GAN (the only baseline here)
    assert verdicts["C15"] == c15
    assert verdicts["C8"] == (C.CONTRADICTED if ls_shift > 0 else C.UNRESOLVED)   # MMD vs S; recall alone is noisy
    s_base = df[df["claim"] == "S vs base"]
    assert set(s_base["cell"]) == {"Presto-S vs base FAD", "Presto-S vs base MMD", "Presto-S vs base CLAP"}
    assert (df["budget"] == 300).all() and df["n"].eq(N).all()


def test_guided_sampling_changes_only_the_guidance():
    from presto_lib.diffusion.pipeline import SamplingConfig

    T = _load("teacher_guidance")
    base = SamplingConfig(sampler="dpmpp_2s", steps=16, guidance="cfgpp", w=0.8)
    g = T.guided(base, 4.5)
    assert (g.guidance, g.w) == ("cfg", 4.5)
    assert {**vars(g), "guidance": "cfgpp", "w": 0.8} == vars(base)


def test_teacher_guidance_cells_follow_planted_effects(tmp_path):
    T = _load("teacher_guidance")
    student = "data/samples/presto_s_tr"
    I = _inputs(tmp_path, {student: 1.0, "data/samples/base": 0.0, "data/teacher_guidance/cfg_4.5": 1.0,
                           "data/teacher_guidance/cfg_1": 2.5})
    df = T.cells_table(I, student, {"base": "data/samples/base", "cfg 4.5": "data/teacher_guidance/cfg_4.5",
                                    "cfg 1": "data/teacher_guidance/cfg_1"}, ("FAD", "MMD"))
    v = dict(zip(df["cell"], df["verdict"]))
    assert v["Presto-S vs base FAD"] == v["Presto-S vs base MMD"] == C.CONTRADICTED      # worse than base
    assert v["Presto-S vs cfg 4.5 FAD"] == C.UNRESOLVED                                  # as far as its teacher
    assert v["Presto-S vs cfg 1 FAD"] == v["Presto-S vs cfg 1 MMD"] == C.REPRODUCED


def _levers():
    return _load("presto_s_levers")


def test_parse_lever_reads_yaml_values():
    L = _levers()
    assert L.parse_lever("ema:train.ema_decay=0.99") == ("ema", {"train.ema_decay": 0.99})
    assert L.parse_lever("two:train.lr_generator=1e-5,algorithm.nu1=0") == \
        ("two", {"train.lr_generator": 1e-5, "algorithm.nu1": 0})
    for bad in ("ema", "ema:", ":train.ema_decay=1", "ema:train.ema_decay"):
        with pytest.raises(ValueError):
            L.parse_lever(bad)


def test_lever_params_change_only_the_named_keys_and_the_layout(tmp_path):
    L, P = _levers(), _params()
    P["presto_s"].update({"out_dir": "data/presto_s", "curve_runs": ["tr"], "eval_prompts": 128})
    P["presto_s"]["train"]["ema_decay"] = 0.0
    before = copy.deepcopy(P)
    Q = L.lever_params(P, "ema", {"train.ema_decay": 0.99}, 1200, root=tmp_path)
    assert P == before                                            # the input is not modified
    q = Q["presto_s"]
    assert q["train"]["ema_decay"] == 0.99 and q["train"]["iterations"] == 1200
    assert L.lever_samples(Q) == tmp_path / "ema" / "samples" / "presto_s_tr"
    assert Path(q["out_dir"]) == tmp_path / "ema" / "presto_s"
    for k, v in (("ema_decay", 0.0), ("iterations", 300)):
        q["train"][k] = v
    for k in ("out_dir", "samples_dir", "curve_runs", "eval_prompts"):
        q[k] = P["presto_s"][k]
    assert Q == P                                                 # nothing else moved
    short = L.lever_params(P, "short", {"train.iterations": 300}, 1200, root=tmp_path)
    assert short["presto_s"]["train"]["iterations"] == 300                # a lever's own budget wins
    R = L.ls_params(short)                                        # Presto-LS on the lever's recipe and budget
    assert R["presto_ls"]["iterations"] == 300 and short["presto_ls"]["iterations"] is None
    assert R["presto_s"] == short["presto_s"] and L.ls_samples(R) == tmp_path / "short" / "samples" / "presto_ls"
    with pytest.raises(KeyError):
        L.lever_params(P, "typo", {"train.ema_decy": 0.99}, 1200, root=tmp_path)


def test_lever_cells_follow_planted_effects(tmp_path):
    L = _levers()
    better, worse = "data/levers/better/samples/presto_s_tr", "data/levers/worse/samples/presto_s_tr"
    I = _inputs(tmp_path, {"data/samples/base": 0.0, "data/samples/presto_s_tr": 1.0, better: 0.0, worse: 2.0})
    against = {"base": Path("data/samples/base"), "committed": Path("data/samples/presto_s_tr")}
    df = L.cell_rows(I, "better", Path(better), against)
    v = {(r.against, r.metric): r.verdict for r in df.itertuples()}
    assert v["committed", "FAD"] == v["committed", "MMD"] == C.REPRODUCED     # the lever beats the committed run
    assert v["base", "FAD"] == C.UNRESOLVED                                   # and draws with the base model
    df = L.cell_rows(I, "worse", Path(worse), against)
    v = {(r.against, r.metric): r.verdict for r in df.itertuples()}
    assert v["committed", "FAD"] == v["base", "MMD"] == C.CONTRADICTED
    assert set(df["metric"]) == set(L.METRICS) and (df["lever"] == "worse").all()
