"""Every stage of the pipeline, declared once: `stages.render` writes dvc.yaml from this list.

A stage names its entry (a `presto_lib.stages.<module>` run with `python -m`, or a notebook run with papermill
through `presto_lib.notebook_runner`, which also writes its size-bounded copy to ${common.results}/notebooks/),
its data deps, the params it reads, and its outputs. Its code deps are not listed: `render` computes them as the
static import closure of the entry (`stages.imports`). `R` stands for the profile's results root
(`${common.results}`: results/ for cpu, results/<profile>/ otherwise).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["R", "StageSpec", "STAGES", "EDM6", "PRESTO_L_VARIANTS", "CONSISTENCY_RUNS", "NOTEBOOK_RUNNER",
           "PRETRAINED"]

R = "${common.results}"
NOTEBOOK_RUNNER = "presto_lib.notebook_runner"       # runs every notebook stage (its imports are code deps too)
PRETRAINED = "pretrained/${profile}"                 # the `pretrained` stage's export (pretrained/cpu committed)
EVALUATIONS = "data/evaluations"                    # stages.evaluation.EVALUATIONS
EDM6 = ("edm.sigma_data", "edm.p_mean", "edm.p_std", "edm.sigma_min", "edm.sigma_max", "edm.rho")
PRESTO_L_VARIANTS = ("ase", "ase_shift", "ase_budget", "ase_st", "presto_l")   # distill.presto_l.VARIANTS
PRESTO_L_TRAIN = ("presto_l.ref_depth", "presto_l.st_weight", "presto_l.sigma_dist", "presto_l.sigma_mix",
                  "presto_l.cond_dropout",
                  "presto_l.lr", "presto_l.batch_size", "presto_l.steps", "presto_l.grad_clip",
                  "presto_l.ema_decay", "presto_l.ckpt_every", "presto_l.log_every")
CONSISTENCY_RUNS = ("cm", "soundctm", "ditto_ctm")                      # stages.consistency.RUNS
CONSISTENCY_RUN = ("consistency.base_model", "consistency.vae", "consistency.latents", "consistency.manifest",
                   "consistency.metrics_dir", "consistency.out_dir", "consistency.samples_dir",
                   "consistency.runs.${item}", "consistency.train", "consistency.table_prompts",
                   "consistency.table_steps", "consistency.gen_batch_size", "consistency.latency_repeats")
PRESTO_S_RECIPE = ("presto_s.base_model", "presto_s.latents", "presto_s.out_dir", "presto_s.algorithm",
                   "presto_s.head", "presto_s.runs", "presto_s.train")


@dataclass(frozen=True)
class StageSpec:
    """One DVC stage: entry (module `presto_lib.stages.x` or `notebooks/NN_x.ipynb`), deps, params, outputs."""
    name: str
    entry: str
    args: str = ""                                   # CLI arguments of a module entry
    deps: tuple[str, ...] = ()                       # data deps (code deps are computed)
    extra_code: tuple[str, ...] = ()                 # non-Python files the code reads (page assets, fixtures)
    params: tuple[str, ...] = ()
    outs: tuple[str, ...] = ()                       # cached outputs (data)
    persist: tuple[str, ...] = ()                    # cached outputs kept across reruns (resumable training)
    results: tuple[str, ...] = ()                    # uncached outputs (tables, figures), committed to git
    metrics: tuple[str, ...] = ()                    # uncached JSON of key numbers (`dvc metrics show`)
    plots: tuple[tuple[str, dict[str, Any]], ...] = ()   # uncached CSV curves (`dvc plots show`)
    foreach: Any = None                              # a list, or a "${params.key}" string
    notes: str = ""
    evaluates: bool = False                          # scores samples (stages.evaluation): out data/evaluations/<name>

    @property
    def evaluation_out(self) -> tuple[str, ...]:
        """The per-clip evaluation data this stage saves (`stages.evaluation.evaluation_dir`), if it evaluates."""
        return (f"{EVALUATIONS}/{self.name}",) if self.evaluates else ()

    @property
    def is_notebook(self) -> bool:
        """Whether the entry is a papermill notebook."""
        return self.entry.endswith(".ipynb")

    @property
    def source(self) -> str:
        """The Python file whose imports define the code deps (a notebook's paired py:percent source)."""
        if self.is_notebook:
            return "notebooks/src/" + self.entry.rsplit("/", 1)[-1].replace(".ipynb", ".py")
        return self.entry.replace(".", "/") + ".py"

    @property
    def executed(self) -> str:
        """Where papermill writes the executed notebook."""
        return "data/executed/" + self.entry.rsplit("/", 1)[-1]

    @property
    def notebook_copy(self) -> str:
        """The size-bounded copy of the executed notebook committed to the repository (`presto_lib.executed`)."""
        return f"{R}/notebooks/" + self.entry.rsplit("/", 1)[-1]

    @property
    def cmd(self) -> str:
        """The command DVC runs (the venv's interpreter via `python -m`); notebooks via the quiet runner."""
        if self.is_notebook:
            return (f"python -m {NOTEBOOK_RUNNER} {self.entry} {self.executed} -p params_file params.yaml "
                    f"--copy-to {self.notebook_copy}")
        return f"python -m {self.entry}" + (f" {self.args}" if self.args else "")


def _t(*names: str) -> tuple[str, ...]:
    """results/tables/<name> for each name."""
    return tuple(f"{R}/tables/{n}" for n in names)


def _f(*names: str) -> tuple[str, ...]:
    """results/figures/<name> for each name."""
    return tuple(f"{R}/figures/{n}" for n in names)


def _rows(*systems: str) -> tuple[str, ...]:
    """The Table 2 row files of some systems (`stages.tables`)."""
    return tuple(f"{R}/tables/table2_rows/{s}.csv" for s in systems)


def _m(*names: str) -> tuple[str, ...]:
    """results/metrics/<name>.json for each name."""
    return tuple(f"{R}/metrics/{n}.json" for n in names)


STAGES: tuple[StageSpec, ...] = (
    StageSpec("edm_basics", "notebooks/00_edm_basics.ipynb", params=("common", "edm"),
              results=_f("fig02_noise_distributions.png")),
    StageSpec("corpus", "notebooks/01_data.ipynb", params=("common", "corpus"), outs=("data/corpus",),
              results=_f("fig_corpus_overview.png", "fig_corpus_examples.png")
              + _t("corpus_summary.csv", "corpus_summary.md")),
    StageSpec("vae", "notebooks/02_vae.ipynb", deps=("data/corpus",),
              params=("common", "vae", "corpus.out_dir", "curves"), persist=("data/vae",),
              plots=((f"{R}/plots/vae_learning_curve.csv", {"x": "step", "y": "val_mel", "template": "linear"}),),
              results=_f("fig_vae_reconstruction.png") + _t("vae_reconstruction.csv", "vae_reconstruction.md"),
              metrics=_m("vae")),
    StageSpec("metrics", "notebooks/04_metrics.ipynb", deps=("data/corpus",),
              extra_code=("tests/fixtures/musicnn_msd.npz",), params=("common", "metrics"), outs=("data/metrics",),
              results=_t("metric_sanity.csv", "metric_sanity.md") + _f("fig_metric_sanity.png")),
    StageSpec("latents", "presto_lib.stages.latents", deps=("data/corpus", "data/vae"),
              params=("common.seed", "base.manifest", "base.vae", "base.latents", "base.encode_batch_size",
                      "base.sample_posterior", "base.latent_std", "base.latent_spread"),
              outs=("data/latents",)),
    StageSpec("base", "notebooks/03_base.ipynb",
              deps=("data/corpus", "data/vae", "data/latents", "data/metrics", f"{R}/tables/metric_sanity.csv"),
              params=("common", *EDM6, "base", "metrics.reference_split", "metrics.backbone", "metrics.clap_path",
                      "metrics.k", "metrics.musicnn_hop_s", "curves"),
              persist=("data/base",), outs=("data/samples/base",),
              plots=((f"{R}/plots/base_learning_curve.csv", {"x": "step", "y": "val_dsm", "template": "linear"}),),
              results=_f("fig_base_training.png", "fig_base_spectrograms.png")
              + _t("base_bpm_following.csv", "base_bpm_following.md") + _rows("base"),
              metrics=_m("table2_base", "base"), evaluates=True),
    StageSpec("presto_l_base_curve", "presto_lib.stages.presto_l", args="--variant base",
              deps=("data/base", "data/vae", "data/corpus"),
              params=("common", "edm", "base.sampler", "base.guidance", "base.cfg_weight", "base.sample_steps",
                      "presto_l.base_model", "presto_l.vae", "presto_l.manifest", "presto_l.out_dir",
                      "presto_l.eval_prompts", "presto_l.eval_steps", "presto_l.gen_batch_size"),
              outs=("data/presto_l/base",)),
    StageSpec("presto_l_finetune", "presto_lib.stages.presto_l", args="--variant ${item}",
              foreach=list(PRESTO_L_VARIANTS),
              deps=("data/base", "data/vae", "data/latents", "data/corpus"),
              params=("common", "edm", "base.sampler", "base.guidance", "base.cfg_weight", "base.sample_steps",
                      "base.eval_prompts", "presto_l.base_model", "presto_l.vae", "presto_l.latents",
                      "presto_l.manifest", "presto_l.out_dir", "presto_l.samples_dir", "presto_l.schedule",
                      *PRESTO_L_TRAIN, "presto_l.eval_prompts", "presto_l.eval_steps", "presto_l.table_prompts",
                      "presto_l.table_steps", "presto_l.gen_batch_size", "curves"),
              outs=("data/presto_l/${item}", "data/samples/${item}"),
              plots=((f"{R}/plots/presto_l_${{item}}_learning_curve.csv",
                      {"x": "step", "y": "val_dsm", "template": "linear"}),)),
    StageSpec("presto_l", "notebooks/05_presto_l.ipynb",
              deps=("data/base", "data/vae", "data/latents", "data/corpus", "data/metrics", "data/samples/base",
                    "data/presto_l/base", *(f"data/presto_l/{v}" for v in PRESTO_L_VARIANTS),
                    "data/samples/ase", "data/samples/presto_l"),
              params=("common", "edm", "base", "metrics", "presto_l"),
              results=_f("fig04_variance_depth.png", "fig06_presto_l.png", "fig10_presto_l_ablation.png")
              + _t("fig04_variance_depth.csv", "fig04_variance_per_clip.csv", "fig06_presto_l.md",
                   "fig10_presto_l_ablation.md", "presto_l_speedup.csv", "presto_l_speedup.md", "presto_l_claims.csv") + _rows("ase", "presto_l"),
              metrics=_m("table2_ase", "table2_presto_l"), evaluates=True,
              plots=((f"{R}/tables/fig06_presto_l.csv", {"x": "nfe", "y": "FAD", "template": "linear"}),
                     (f"{R}/tables/fig10_presto_l_ablation.csv", {"x": "nfe", "y": "FAD", "template": "linear"}))),
    StageSpec("presto_s_run", "presto_lib.stages.presto_s", args="--run ${item}", foreach="keys:presto_s.runs",
              deps=("data/base", "data/vae", "data/latents", "data/corpus"),
              params=("common", *EDM6, "base.eval_prompts", "presto_s.base_model", "presto_s.vae",
                      "presto_s.latents", "presto_s.manifest", "presto_s.out_dir", "presto_s.samples_dir",
                      "presto_s.algorithm", "presto_s.head", "presto_s.runs.${item}", "presto_s.train",
                      "presto_s.presto_s_run", "presto_s.dmd_gan_run", "presto_s.curve_runs",
                      "presto_s.eval_prompts", "presto_s.table_prompts", "presto_s.eval_steps",
                      "presto_s.table_steps", "presto_s.gen_batch_size", "curves"),
              outs=("data/presto_s/${item}", "data/samples/presto_s_${item}"),
              plots=((f"{R}/plots/presto_s_${{item}}_learning_curve.csv",
                      {"x": "step", "y": "val_latent_mmd", "template": "linear"}),)),
    StageSpec("presto_s", "notebooks/06_presto_s.ipynb",
              deps=("data/base", "data/vae", "data/corpus", "data/metrics", "data/presto_s",
                    "data/samples/presto_s_${presto_s.presto_s_run}", "data/samples/presto_s_${presto_s.dmd_gan_run}"),
              params=("common", "edm", "metrics", "presto_s"),
              results=_t("table1_noise_distributions.csv", "table1_noise_distributions.md", "presto_s_findings.csv")
              + _f("fig05_continuous_vs_discrete.png", "fig11_spectrograms.png") + _rows("presto_s", "dmd_gan"),
              metrics=_m("table2_presto_s", "table2_dmd_gan"), evaluates=True),
    StageSpec("presto_ls_layer", "presto_lib.stages.presto_ls", args="layer", deps=("data/base", "data/latents"),
              params=("common", *EDM6, "presto_l.base_model", "presto_l.latents", *PRESTO_L_TRAIN,
                      "presto_ls.schedule", "presto_ls.layer_steps"),
              outs=("data/presto_ls/presto_l",)),
    StageSpec("presto_ls_distill", "presto_lib.stages.presto_ls", args="distill",
              deps=("data/base", "data/vae", "data/latents", "data/corpus", "data/presto_ls/presto_l",
                    "data/presto_s/${presto_ls.presto_s_run}/generator"),
              params=("common", "edm", "presto_l.ref_depth", "presto_l.st_weight", "presto_l.sigma_dist",
                      "presto_l.sigma_mix", "presto_l.cond_dropout", "presto_l.schedule", *PRESTO_S_RECIPE, "presto_s.vae",
                      "presto_s.manifest", "presto_s.samples_dir", "base.eval_prompts", "presto_s.table_prompts",
                      "presto_s.table_steps", "presto_s.gen_batch_size", "presto_ls.presto_s_run",
                      "presto_ls.schedule", "presto_ls.iterations", "presto_ls.table_steps", "curves"),
              outs=("data/presto_ls/presto_ls", "data/samples/presto_ls"),
              plots=((f"{R}/plots/presto_ls_learning_curve.csv",
                      {"x": "step", "y": "val_latent_mmd", "template": "linear"}),)),
    StageSpec("presto_ls_early", "presto_lib.stages.presto_ls", args="early --setup ${item}",
              foreach="${presto_ls.fig8_setups}",
              deps=("data/base", "data/vae", "data/latents", "data/corpus", "data/presto_ls/presto_l",
                    "data/presto_s/${presto_ls.presto_s_run}/generator",
                    "data/presto_s/${presto_ls.presto_s_run}/fake"),      # step_then_layer continues psi (A.4)
              params=("common", "edm", "presto_l.ref_depth", "presto_l.st_weight", "presto_l.sigma_dist",
                      "presto_l.sigma_mix", "presto_l.cond_dropout", "presto_l.schedule", *PRESTO_S_RECIPE,
                      "presto_ls.presto_s_run", "presto_ls.schedule", "presto_ls.fig8_iterations",
                      "presto_ls.layer_weight"),
              outs=("data/presto_ls/fig8/${item}",)),
    StageSpec("presto_ls", "notebooks/07_presto_ls.ipynb",
              deps=("data/base", "data/vae", "data/latents", "data/corpus", "data/metrics", "data/presto_ls",
                    "data/samples/presto_ls", "data/presto_s/${presto_ls.presto_s_run}/generator",
                    "data/samples/presto_s_${presto_ls.presto_s_run}"),
              params=("common", "edm", "base", "metrics", "presto_l", "presto_s", "presto_ls"),
              results=_f("fig07_presto_s_variance.png", "fig08_ls_failure_modes.png")
              + _t("fig08_ls_failure_modes.csv", "fig07_claim_cells.csv", "latency.csv", "latency.md")
              + _rows("presto_ls"),
              metrics=_m("table2_presto_ls"), evaluates=True),
    StageSpec("consistency_run", "presto_lib.stages.consistency", args="--run ${item}",
              foreach="keys:consistency.runs",
              deps=("data/base", "data/vae", "data/latents", "data/corpus", "data/metrics"),
              params=("common", *EDM6, "base.eval_prompts", "metrics.reference_split", "metrics.backbone",
                      "metrics.clap_path", "metrics.k", "metrics.musicnn_hop_s", *CONSISTENCY_RUN),
              outs=("data/consistency/${item}", "data/samples/${item}"),
              results=(f"{R}/tables/table2_rows/${{item}}.csv",), metrics=(f"{R}/metrics/table2_${{item}}.json",)),
    StageSpec("consistency", "notebooks/09_consistency.ipynb",
              deps=("data/consistency", *(f"data/samples/{r}" for r in CONSISTENCY_RUNS),
                    "data/presto_s/${presto_s.presto_s_run}/info.json",
                    "data/samples/presto_s_${presto_s.presto_s_run}", f"{R}/tables/table2_full_comparison.csv"),
              params=("common", "edm", "presto_s.presto_s_run", "presto_s.algorithm", "presto_s.train",
                      "consistency"),
              results=_f("fig_consistency_toy.png", "fig_consistency_table2.png")
              + _t("consistency_toy.csv", "consistency_budget.csv", "consistency_vs_presto_s.csv",
                   "consistency_vs_presto_s.md")),
    StageSpec("listening", "notebooks/08_listening_test.ipynb",
              deps=("data/corpus", "data/samples/base", "data/samples/presto_l",
                    "data/samples/presto_s_${presto_s.presto_s_run}", "data/samples/presto_ls",
                    "data/samples/soundctm"),
              extra_code=("presto_lib/eval/listening_page",), params=("common", "listening"),
              outs=("data/listening_test/kit",),
              results=_f("fig12_listening_test.png") + _t("listening_test.csv", "listening_test.md")),
    StageSpec("base_79nfe", "presto_lib.stages.base_79nfe",
              deps=("data/base", "data/vae", "data/corpus", "data/metrics"),
              params=("common", "edm", "base", "metrics", "presto_s.base_model", "presto_s.vae",
                      "artefacts.base_paper_steps"),
              outs=("data/samples/base_79nfe",), results=_rows("base_79nfe"), metrics=_m("table2_base_79nfe")),
    StageSpec("fig09_rho", "presto_lib.stages.fig09_rho",
              deps=("data/base", "data/vae", "data/corpus", "data/presto_ls/presto_ls/generator"),
              params=("common", "edm", "base", "presto_s", "presto_ls", "artefacts.rho_values", "artefacts.rho_prompt",
                      "artefacts.rho_seeds", "artefacts.rho_steps"),
              outs=("data/fig09_rho",),
              results=_f("fig09_rho.png") + _t("fig09_rho.csv", "fig09_rho.md", "fig09_claim_cells.csv"),
              metrics=_m("fig09_rho")),
    StageSpec("fig13_clap_rejection", "presto_lib.stages.fig13_clap_rejection",
              deps=("data/base", "data/vae", "data/corpus", "data/metrics", "data/presto_ls/presto_ls/generator"),
              params=("common", "edm", "base", "metrics", "presto_s", "presto_ls", "artefacts.rejection_k",
                      "artefacts.rejection_prompts", "artefacts.rejection_ratios", "artefacts.rejection_tolerance"),
              outs=("data/fig13_rejection",),
              results=_f("fig13_clap_rejection.png") + _t("fig13_clap_rejection.md", "fig13_claims.csv",
                                                             "fig13_claim_cells.csv"),
              metrics=_m("fig13_clap_rejection"),
              plots=((f"{R}/tables/fig13_clap_rejection.csv", {"x": "r", "y": "FAD", "template": "linear"}),)),
    StageSpec("m2s", "presto_lib.stages.m2s", params=("common", "corpus", "m2s"), outs=("data/m2s",),
              results=_t("m2s.csv", "m2s.md"), metrics=_m("m2s")),
    StageSpec("tables34", "presto_lib.stages.tables34",
              deps=("data/base", "data/vae", "data/presto_l/ase", "data/presto_l/presto_l",
                    "data/presto_s/${presto_s.presto_s_run}/generator", "data/presto_ls/presto_ls/generator",
                    "data/m2s"),
              params=("common", "edm", "base", "presto_l", "presto_s", "presto_ls", "m2s.out_dir",
                      "artefacts.base_paper_steps", "artefacts.latency_warmup", "artefacts.latency_repeats",
                      "artefacts.memory_cap_gb", "artefacts.batch_limit"),
              results=_t("table3_latency.csv", "table3_latency.md", "table4_max_batch.csv", "table4_max_batch.md"),
              metrics=_m("tables34")),
    StageSpec("artefacts", "notebooks/10_artefacts.ipynb",
              deps=("data/fig09_rho", "data/fig13_rejection", "data/m2s", f"{R}/tables/fig09_rho.csv",
                    f"{R}/tables/fig13_clap_rejection.csv", f"{R}/tables/table3_latency.csv",
                    f"{R}/tables/table4_max_batch.csv", f"{R}/tables/m2s.csv"),
              params=("common", "artefacts", "m2s")),
    StageSpec("tables", "presto_lib.stages.tables",
              deps=_rows("base", "base_79nfe", "ase", "presto_l", "presto_s", "dmd_gan", "presto_ls", *CONSISTENCY_RUNS),
              params=("common.results",),
              results=_t("table2_full_comparison.csv", "table2_full_comparison.md")),
    StageSpec("noise_floor", "presto_lib.stages.noise_floor",
              deps=("data/base", "data/vae", "data/corpus", "data/metrics", "data/samples/base"),
              params=("common", "edm", "base", "metrics"), outs=("data/noise_floor",),
              results=_t("noise_floor.csv"), evaluates=True),
    StageSpec("pipeline_times", "presto_lib.stages.pipeline_times",
              deps=("data/executed", f"{R}/tables/table2_full_comparison.csv"), params=("common.results",),
              results=_t("pipeline_times.csv", "pipeline_times.md")),
    StageSpec("pretrained", "presto_lib.stages.pretrained",
              deps=("data/vae", "data/base", "data/presto_ls/presto_ls"),
              params=("profile", "edm.sigma_min", "edm.sigma_max", "edm.rho", "base.sampler", "base.guidance",
                      "base.cfg_weight", "base.sample_steps", "presto_l.table_steps", "presto_s.table_steps",
                      "presto_ls.table_steps"),
              results=(PRETRAINED,),
              notes="VAE, base and Presto-LS in float16 with a manifest tied to dvc.lock (committed for cpu)"),
    StageSpec("demo", "presto_lib.stages.demo", args="--prompts 4 --seconds 5",
              deps=("data/corpus", "data/samples/base", "data/samples/ase", "data/samples/presto_l",
                    "data/samples/presto_s_${presto_s.presto_s_run}", "data/samples/presto_s_${presto_s.dmd_gan_run}",
                    "data/samples/presto_ls"),
              params=("common.results", "common.sample_rate", "base.manifest", "presto_s.presto_s_run",
                      "presto_s.dmd_gan_run"),
              results=(f"{R}/demo",)),
)

# The claims ledger reads every evaluating stage's per-clip data, the samples folders (a baseline nobody scored is
# scored there), the training logs of Fig. 8 and the stage tables it judges; it runs last.
STAGES += (
    StageSpec("claims", "presto_lib.stages.claims",
              deps=(*(s.evaluation_out[0] for s in STAGES if s.evaluates), "data/corpus", "data/metrics",
                    "data/samples", "data/presto_ls", f"{R}/tables/table3_latency.csv",
                    f"{R}/tables/fig04_variance_per_clip.csv", f"{R}/tables/noise_floor.csv",
                    f"{R}/tables/table2_full_comparison.csv", f"{R}/tables/fig13_claim_cells.csv",
                    f"{R}/tables/fig09_claim_cells.csv", f"{R}/tables/fig07_claim_cells.csv"),
              params=("common", "metrics", "presto_s", "presto_l.out_dir", "presto_l.eval_steps",
                      "presto_l.samples_dir", "presto_l.table_steps", "base.samples_dir", "base.sample_steps",
                      "artefacts.base_paper_steps",
                      "presto_ls.presto_s_run", "presto_ls.fig8_setups", "presto_ls.fig8_last"),
              results=(f"{R}/claims.md", f"{R}/claims.csv")),
)
