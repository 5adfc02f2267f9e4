"""The claims ledger: the paper's claims C1-C15 with its numbers, and the writer of claims.md / claims.csv.

Every verdict comes from `presto_lib.eval.claims` (one rule: paired bootstrap interval, every cell). This module
only holds the registry and formats results; it computes no statistics. The README quotes the ledger verbatim
through `readme_snippet` + `splice_readme`, so README and results cannot disagree.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from presto_lib.eval.claims import NOT_RUN, REPRODUCED, UNRESOLVED, Comparison, aggregate, prompts_needed

COLUMNS = ("id", "claim", "paper's evidence", "ours", "CI", "verdict", "why / what would resolve it", "where shown")
BEGIN, END = "<!-- claims:begin -->", "<!-- claims:end -->"


# ---- the registry ----

@dataclass(frozen=True)
class Claim:
    """One statement of the paper: its words, its evidence (table/figure and numbers), the tested sign, where shown."""
    id: str
    text: str
    paper_evidence: str
    direction: str          # the sign each cell is judged on, in words (cells carry it as +1/-1)
    where: str              # the table / figure / notebook that shows ours
    test: str = ""          # how the cells are formed (what the claims stage computes)


CLAIMS: tuple[Claim, ...] = (
    Claim("C1", "Switching p_DMD to the training distribution beats DMD2's all-inference setup",
          "Table 1 (top), LS GAN: all-Inf. (DMD2) FAD 0.37 / MMD 1.73 / CLAP 27.45; p_DMD=Tr. rows FAD 0.27, 0.23, "
          "0.22 / MMD 1.27, 0.86, 0.83 / CLAP 33.12, 33.29, 33.13; paired switch (Inf,Inf,Tr,Tr) -> (Inf,Tr,Tr,Tr): "
          "0.37 -> 0.22, 1.51 -> 0.83, 24.90 -> 33.13",
          "delta = p_DMD Tr. - p_DMD Inf. (others fixed): FAD < 0, MMD < 0, CLAP > 0",
          "results/tables/table1_noise_distributions.csv; notebook 06",
          "every metric; FAD/MMD by paired set-metric bootstrap, CLAP by per-clip paired bootstrap"),
    Claim("C2", "A least-squares discriminator beats the non-saturating one",
          "Table 1 (bottom), LS vs NS per row (p_gen,p_DMD,p_DSM,p_GAN): (Inf,Tr,Inf,Tr) FAD 0.23 vs 0.24, MMD 0.86 vs "
          "0.89, CLAP 33.29 vs 31.48; (Inf,Tr,Tr,Tr) 0.22 vs 0.25, 0.83 vs 0.96, 33.13 vs 31.78; (Tr,Tr,Tr,Tr) 0.24 "
          "vs 0.26, 0.99 vs 1.04, 30.89 vs 29.46 ('consistent improvements')",
          "delta = LS - NS: FAD < 0, MMD < 0, CLAP > 0",
          "results/tables/table1_noise_distributions.csv; notebook 06",
          "every row x every metric"),
    Claim("C3", "Continuous generator inputs improve with steps, discrete ones do not",
          "Fig. 5 (curves, no numbers in text): continuous keeps 'a correlation where more steps improve quality', "
          "discrete is inconsistent; continuous best in CLAP; discrete slightly better FAD at 1-2 steps",
          "rho(FAD, steps)_continuous - rho(FAD, steps)_discrete < 0 (and likewise MMD)",
          "results/figures/fig05_continuous_vs_discrete.png; notebook 06",
          "trend_ci with against=discrete curve (discrete_k at its own k steps: one model per budget, sec. 3.2.1), "
          "same prompts at every step count"),
    Claim("C4", "Presto-L beats the base model and ASE at every step budget",
          "Fig. 6 (curves over steps) and Table 2 at 80 NFE: base FAD 0.24 / MMD 0.82 / CLAP 31.56, ASE 0.25 / 1.12 / "
          "30.03, Presto-L 0.18 / 0.61 / 32.28",
          "delta = Presto-L - X for X in (base, ASE): FAD < 0, MMD < 0, CLAP > 0",
          "results/figures/fig06_presto_l.png, results/tables/fig06_presto_l.csv; notebook 05",
          "every step budget x every metric x both baselines; at the Table 2 budget (16 steps) on all Table 2 "
          "prompts, elsewhere on the curve prompts"),
    Claim("C5", "The base model's hidden variance spikes at the last DiT block",
          "Fig. 4: variance grows with depth and spikes 'on the last layer up to an order of magnitude higher'",
          "var(block L) / var(block L-1) > 1 (reported against the paper's ~10x)",
          "results/figures/fig04_variance_depth.png, results/tables/fig04_variance_per_clip.csv; notebook 05",
          "paired over clips at each noise level: log var(L) - log var(L-1) > 0, every noise level"),
    Claim("C6", "Step distillation amortises the last-block spike",
          "Fig. 7: Presto-S's spike is 'amortized across the last 10 layers and never reaches the base model's "
          "magnitude'",
          "spike ratio Presto-S - spike ratio base < 0",
          "results/figures/fig07_presto_s_variance.png, results/tables/fig07_claim_cells.csv; notebook 07",
          "paired over clips (averaged over noise levels): log spike ratio (Presto-S) - log spike ratio (base) < 0"),
    Claim("C7", "Presto-S is the best step-distillation method",
          "Table 2 (4 steps): Presto-S FAD 0.22 / MMD 0.83 / CLAP 33.13 vs CM 0.47 / 2.50 / 26.33, SoundCTM 0.35 / "
          "1.72 / 29.61, DITTO-CTM 0.36 / 1.62 / 28.31, DMD-GAN 0.29 / 1.16 / 27.56",
          "delta = Presto-S - X: FAD < 0, MMD < 0, CLAP > 0",
          "results/tables/table2_full_comparison.csv; notebook 07",
          "every baseline that was run x every metric (baselines not run are listed in 'why')"),
    Claim("C8", "Presto-LS improves MMD and recall over Presto-S",
          "Table 2: MMD 0.73 vs 0.83, recall 0.14 vs 0.10 (FAD 0.23 vs 0.22, CLAP 32.21 vs 33.13 not claimed)",
          "delta = Presto-LS - Presto-S: MMD < 0, recall > 0",
          "results/tables/table2_full_comparison.csv; notebook 07",
          "MMD by paired set-metric bootstrap, recall by the same with metric=recall"),
    Claim("C9", "Step-then-layer and joint step+layer distillation collapse; Presto-LS stays stable",
          "Fig. 8 (curves): the failing setups show rising generator loss, falling discriminator loss and near-"
          "perfect discriminator accuracy on real data; Presto-LS avoids it",
          "delta = X - Presto-LS for X in (step-then-layer, joint): real-data accuracy > 0",
          "results/figures/fig08_ls_failure_modes.png, results/tables/fig08_ls_failure_modes.csv; notebook 07",
          "paired over late updates (and seeds where repeated)"),
    Claim("C10", "Presto-LS is 10-18x faster than the base model; Presto-L is ~27% faster per step",
          "Table 3 (A100, batch 1): mono latency base 4144.27 ms vs Presto-LS 230.49 ms (18.0x), stereo 4349.58 vs "
          "435.8 ms (10.0x); RTF base 7.72 vs Presto-L 9.80 (+27%), generation 4079.81 vs 3201.19 ms",
          "speed-up Presto-LS / base >= 10; per-step speed-up Presto-L / base > 1",
          "results/tables/table3_latency.csv; stage tables34",
          "ratio_ci on repeated timings: base at the paper's NFE vs Presto-LS (mono latency, >= 10x); base vs "
          "Presto-L at the same sampler budget (generation time, > 1x)"),
    Claim("C11", "CLAP rejection sampling raises the CLAP score and lowers diversity",
          "Fig. 13 (curves over rejection ratio): CLAP score up, FAD/MMD maintained or improved, recall/coverage down",
          "delta = rejection - none: CLAP > 0, recall < 0",
          "notebook 07",
          "same prompts with and without rejection"),
    Claim("C12", "The EDM rho changes the output from the same latent",
          "Fig. 9 / A.5 (spectrograms): rho 7 vs 1000, same prompt and noise, 'perceptually distinct outputs'",
          "embedding distance between rho=7 and rho=1000 outputs of one latent > 0 (noise floor: identical settings)",
          "notebook 07",
          "paired over prompts: distance(rho 7, rho 1000) - distance(rho 7, rho 7 re-run) > 0"),
    Claim("C13", "Each Presto-L component (shift, budget conditioning, self-teacher) helps over ASE",
          "Fig. 10 (curves): each ASE + component beats ASE; the shift gives most of the FAD/MMD gain, budget "
          "conditioning and self-teacher help CLAP",
          "delta = (ASE + component) - ASE: FAD < 0, MMD < 0, CLAP > 0",
          "results/figures/fig10_presto_l_ablation.png, results/tables/fig10_presto_l_ablation.csv; notebook 05",
          "every component x every metric at the largest step budget (on all Table 2 prompts when it is the "
          "Table 2 budget)"),
    Claim("C14", "Listeners rate Presto-LS highest",
          "Fig. 12 / section 4.5: n = 16 raters, 20 prompts, paired t-tests with Bonferroni, p < 0.05 against base, "
          "SoundCTM and Stable Audio Open",
          "delta = Presto-LS - X rating > 0 for every X",
          "results/tables/listening_test.csv; notebook 08",
          "paired over raters; only human ratings count"),
    Claim("C15", "Presto-LS beats the base model on MMD",
          "Table 2: MMD 0.73 (Presto-LS, 4 steps) vs 0.82 (base, 80 NFE)",
          "delta = Presto-LS - base: MMD < 0",
          "results/tables/table2_full_comparison.csv; notebook 07",
          "paired set-metric bootstrap"),
)


def claim(claim_id: str) -> Claim:
    """The registry entry with this id."""
    for c in CLAIMS:
        if c.id == claim_id:
            return c
    raise KeyError(f"no claim {claim_id!r}; known: {', '.join(c.id for c in CLAIMS)}")


# ---- results ----

@dataclass
class ClaimResult:
    """Our evidence for one claim: its cells (judged by the every-cell rule), or the reason it was not run."""
    claim: Claim
    cells: list[Comparison] = field(default_factory=list)
    reason: str = ""        # why not run / what limits it (budget, scale, missing baseline)

    @property
    def verdict(self) -> str:
        return aggregate(self.cells)


def not_run(claim_id: str, reason: str) -> ClaimResult:
    """A claim whose inputs are missing."""
    if not reason:
        raise ValueError("a claim that is not run needs a reason")
    return ClaimResult(claim(claim_id), [], reason)


def _fmt(x: float) -> str:
    return f"{x:.3g}"


def _ours(r: ClaimResult) -> str:
    """Each cell's estimate (and the two systems' values), with prompts and seeds."""
    parts = []
    for c in r.cells:
        vals = f" ({_fmt(c.values[0])} vs {_fmt(c.values[1])})" if c.values else ""
        parts.append(f"{c.name}: {_fmt(c.estimate)}{vals}, n={c.n}, seeds={c.seeds}")
    return "; ".join(parts)


def _ci(r: ClaimResult) -> str:
    if not r.cells:
        return ""
    level = f"{100 * (1 - r.cells[0].alpha):g}%"
    return f"{level}: " + "; ".join(f"{c.name} [{_fmt(c.lo)}, {_fmt(c.hi)}]" for c in r.cells)


def _why(r: ClaimResult) -> str:
    """The stated reason, plus, for unresolved cells, the prompts the interval would need at the observed effect."""
    notes = [r.reason] if r.reason else []
    for c in r.cells:
        if c.verdict == UNRESOLVED:
            effect = c.estimate - c.null
            need = prompts_needed(c.half_width, c.n, effect)
            notes.append(f"{c.name}: half-width {_fmt(c.half_width)} vs effect {_fmt(effect)}"
                         + (f", ~{need} prompts to resolve it" if need > 0 and c.direction * effect > 0 else
                            ", estimate on the other side of the claim" if effect else ""))
    if not r.cells and not r.reason:
        notes.append("no result computed")
    return "; ".join(notes)


def ledger_rows(results: Sequence[ClaimResult], claims: Sequence[Claim] = CLAIMS) -> list[dict[str, str]]:
    """One row per registered claim, in registry order; claims without a result are 'not run'."""
    by_id = {r.claim.id: r for r in results}
    unknown = set(by_id) - {c.id for c in claims}
    if unknown:
        raise ValueError(f"results for unregistered claims: {sorted(unknown)}")
    rows = []
    for c in claims:
        r = by_id.get(c.id) or ClaimResult(c, [], "")
        rows.append({"id": c.id, "claim": c.text, "paper's evidence": c.paper_evidence, "ours": _ours(r),
                     "CI": _ci(r), "verdict": r.verdict, "why / what would resolve it": _why(r),
                     "where shown": c.where})
    return rows


# ---- writing ----

def _md_cell(s: str) -> str:
    return str(s).replace("|", "\\|").replace("\n", "<br>")


def summary(rows: Sequence[dict[str, str]]) -> str:
    """'k of n claims reproduced; ...' counted by verdict."""
    n = len(rows)
    counts = {v: sum(r["verdict"] == v for r in rows) for v in (REPRODUCED, "contradicted", UNRESOLVED, NOT_RUN)}
    return f"{counts[REPRODUCED]} of {n} claims reproduced, " + ", ".join(
        f"{k} {v}" for v, k in list(counts.items())[1:]) + "."


def ledger_markdown(rows: Sequence[dict[str, str]]) -> str:
    """The ledger as a Markdown table, preceded by its one-line summary."""
    lines = [summary(rows), "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_md_cell(r[c]) for c in COLUMNS) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def write_ledger(results: Sequence[ClaimResult], out_dir: str | Path = "results",
                 claims: Sequence[Claim] = CLAIMS, header: str = "") -> tuple[Path, Path]:
    """Write `claims.md` (`header`, e.g. the noise floor, after the intro) and `claims.csv` (columns COLUMNS)
    under `out_dir`; returns both paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = ledger_rows(results, claims)
    md, csv_path = out / "claims.md", out / "claims.csv"
    intro = ("# Claims ledger\n\nEach claim judged by one rule (`presto_lib.eval.claims`): a paired difference over "
             "the same prompts with a bootstrap interval; reproduced when it excludes zero in the paper's "
             "direction, contradicted when it excludes zero the other way, unresolved otherwise; claims over "
             "several cells need every cell.\n\n")
    _atomic_write(md, intro + header + ledger_markdown(rows))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    _atomic_write(csv_path, buf.getvalue())
    return md, csv_path


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def read_ledger(csv_path: str | Path) -> list[dict[str, str]]:
    """Rows of a written claims.csv."""
    with open(csv_path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if rows and tuple(rows[0]) != COLUMNS:
        raise ValueError(f"{csv_path}: columns {tuple(rows[0])} are not the ledger's {COLUMNS}")
    return rows


# ---- README ----

def readme_snippet(csv_path: str | Path) -> str:
    """The README's findings block: the ledger's summary and table, verbatim, between BEGIN/END markers."""
    return f"{BEGIN}\n{ledger_markdown(read_ledger(csv_path))}{END}"


def splice_readme(readme: str, snippet: str) -> str:
    """`readme` with the text between the BEGIN/END markers replaced by `snippet` (markers must exist once)."""
    if readme.count(BEGIN) != 1 or readme.count(END) != 1 or readme.index(BEGIN) > readme.index(END):
        raise ValueError(f"README must hold exactly one {BEGIN} ... {END} block")
    head, rest = readme.split(BEGIN)
    return head + snippet + rest.split(END, 1)[1]
