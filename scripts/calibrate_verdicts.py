"""Calibrate the Reproduction section's verdicts on simulated runs: how often each of the post's
findings is called reproduced or contradicted when nothing differs between arms, and how often
the post's size is called ruled out when the run's truth is exactly the post's size.

Usage:
    PYTHONPATH=src python scripts/calibrate_verdicts.py                 # BENCHMARKS.md (issue 27)
    PYTHONPATH=src python scripts/calibrate_verdicts.py --studies 200 --workers 2

Each simulated run has what the bundled findings (localnova/findings/nova_case_study.yaml)
compare: two models (the smaller at a panel level of 4.5 points, the larger at 5.0), the four
arms, and per question the headline panel's score (a question effect shared by every arm and
model, SD 1.2, and a per-answer deviation, SD 1.0), the latency probe's time per request on a
sample of the questions (lognormal around 2 s: a question effect of log-SD 0.3, a per-answer
deviation of 0.15) and each answer's total tokens (around 150: 0.3 and 0.2). Where questions
come from documents, each document adds a per-arm effect to every measure, sized so that the
intra-document correlation of the arm differences (on the latent scale) is the cell's ICC.

Every run goes through the project's own code: `evaluate.reproduction.reproduce`, which
computes every comparison (paired, cluster-robust where questions cluster, the sign-flip test
with 10,000 patterns) and combines them with `evaluate.verdicts.combine`. Two truths:
- null: every arm of every model from one distribution (the base levels above; the larger
  model ahead at base, so finding 4's premise holds); a "reproduced" or "contradicted" verdict
  is false;
- post: every sized comparison's truth is the post's figure (ft +30%, rag +30%, ft_rag +83% on
  the panel score; latency ft -50%, rag -30%; tokens ft -60%, rag +100%: the bounds of "more
  than"), on both models; "the post's size is ruled out" is false.
Limit: each rate at most 5% plus three Monte Carlo standard errors. Beside them, the false
"contradicted" rate of the rule before issue 27 (contradicted when any comparison is, unadjusted).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from localnova.config import DEFAULT_FINDINGS
from localnova.evaluate.reproduction import CONTRADICTED, NOT_TESTED, REPRODUCED, RULED_OUT, RunValues, reproduce
from localnova.findings import load_findings

FINDINGS = load_findings(DEFAULT_FINDINGS).content
MODELS = ("smaller", "larger")
ARMS = ("base", "rag", "ft", "ft_rag")
LEVELS = {"smaller": 4.5, "larger": 5.0}
ALPHA = 0.05
MC_LIMIT = 3
BLOCK = 25
# the post's sizes, as multipliers of the reference arm's level (ft_rag: +83%)
POST = {
    "panel_score": {"base": 1.0, "rag": 1.3, "ft": 1.3, "ft_rag": 1.83},
    "latency": {"base": 1.0, "rag": 0.7, "ft": 0.5, "ft_rag": 0.5},
    "total_tokens": {"base": 1.0, "rag": 2.0, "ft": 0.4, "ft_rag": 0.8},
}


@dataclass(frozen=True)
class Cell:
    """One row of the table: the truth, the questions (in `documents` documents of equal size,
    0: independent), how many the latency probe times, the latent ICC of arm differences, and a
    factor on every per-answer deviation (noisier runs put the post's sizes near what they can
    detect, where "ruled out" is a close call)."""

    truth: str
    questions: int
    probed: int
    documents: int = 0
    icc: float = 0.0
    noise: float = 1.0

    @property
    def name(self) -> str:
        where = f"{self.documents} documents, ICC {self.icc:g}" if self.documents else "independent"
        noise = f", noise x{self.noise:g}" if self.noise != 1 else ""
        return f"{self.truth}, {self.questions} questions ({where}), {self.probed} probed{noise}"


def _document_effects(rng: np.random.Generator, cell: Cell, noise_sd: float) -> np.ndarray:
    """Per question and arm, its document's effect (0 without documents): SD chosen so that the
    arm differences' intra-document correlation is the cell's ICC."""
    if not cell.documents or cell.icc <= 0:
        return np.zeros((cell.questions, len(ARMS)))
    sd = noise_sd * math.sqrt(cell.icc / (1 - cell.icc))
    per_document = rng.normal(0, sd, size=(cell.documents, len(ARMS)))
    return per_document[np.arange(cell.questions) * cell.documents // cell.questions]


def simulated_run(rng: np.random.Generator, cell: Cell) -> RunValues:
    """One run's per-question values of the three measures, as `reproduction.run_values` gives them."""
    questions = [f"q{q:03d}" for q in range(cell.questions)]
    probed = sorted(rng.choice(cell.questions, size=min(cell.probed, cell.questions), replace=False))
    values: dict[str, dict] = {"panel_score": {}, "latency": {}, "total_tokens": {}}
    question_score = rng.normal(0, 1.2, cell.questions)
    question_time, question_tokens = rng.normal(0, 0.3, cell.questions), rng.normal(0, 0.3, cell.questions)
    shape = (cell.questions, len(ARMS))

    def deviations(sd: float) -> np.ndarray:
        return rng.normal(0, cell.noise * sd, shape) + _document_effects(rng, cell, cell.noise * sd)

    for model in MODELS:
        score = LEVELS[model] + question_score[:, None] + deviations(1.0)
        log_time = math.log(2000.0) + question_time[:, None] + deviations(0.15)
        log_tokens = math.log(150.0) + question_tokens[:, None] + deviations(0.2)
        for a, arm in enumerate(ARMS):
            shift = {measure: POST[measure][arm] if cell.truth == "post" else 1.0 for measure in POST}
            # the panel's change is in % of the base level; the others scale each answer
            panel = score[:, a] + (shift["panel_score"] - 1.0) * LEVELS[model]
            values["panel_score"][(model, arm)] = dict(zip(questions, panel.tolist(), strict=True))
            times = np.exp(log_time[:, a]) * shift["latency"]
            values["latency"][(model, arm)] = {questions[q]: float(times[q]) for q in probed}
            tokens = np.exp(log_tokens[:, a]) * shift["total_tokens"]
            values["total_tokens"][(model, arm)] = dict(zip(questions, tokens.tolist(), strict=True))
    clusters = {q: f"d{i * cell.documents // cell.questions}" for i, q in enumerate(questions)} if cell.documents else None
    return RunValues(list(MODELS), values, {}, clusters)


def _old_contradicted(result) -> bool:
    """The rule before issue 27: contradicted when any comparison goes the other way at 5%."""
    return any(c.p < ALPHA and c.against for c in result.comparisons if c.verdict != NOT_TESTED)


def verdicts_block(task: tuple[Cell, int, int]) -> list[list[tuple[str, bool]]]:
    """Per study of one block: each finding's (verdict, contradicted by the old rule)."""
    cell, n_studies, seed = task
    rng = np.random.default_rng(seed)
    return [[(r.verdict, _old_contradicted(r)) for r in reproduce(FINDINGS, simulated_run(rng, cell))] for _ in range(n_studies)]


def simulate(cell: Cell, n_studies: int, seed: int, workers: int) -> list[list[tuple[str, bool]]]:
    blocks = [min(BLOCK, n_studies - start) for start in range(0, n_studies, BLOCK)]
    seeds = np.random.SeedSequence(seed).spawn(len(blocks))
    tasks = [(cell, size, int(child.generate_state(1)[0])) for size, child in zip(blocks, seeds, strict=True)]
    if workers <= 1:
        return [study for task in tasks for study in verdicts_block(task)]
    with ProcessPoolExecutor(workers) as pool:
        return [study for block in pool.map(verdicts_block, tasks) for study in block]


def rate(hits: int, total: int) -> tuple[float, float]:
    share = hits / total
    return share, math.sqrt(share * (1 - share) / total)


def cell_row(cell: Cell, studies: list[list[tuple[str, bool]]]) -> dict:
    """Per finding, the false verdict rates this cell's truth makes false, with their limits."""
    row: dict = {"cell": cell.name, "truth": cell.truth, "studies": len(studies), "findings": [], "ok": True}
    for number, finding in enumerate(FINDINGS.findings):
        verdicts = [study[number][0] for study in studies]
        found = {"finding": f"{number + 1}. {finding.id}", "not_tested": rate(verdicts.count(NOT_TESTED), len(studies))[0]}
        if cell.truth == "null":
            false = {"reproduced": verdicts.count(REPRODUCED), "contradicted": verdicts.count(CONTRADICTED)}
            found["contradicted_before"] = rate(sum(study[number][1] for study in studies), len(studies))[0]
        else:
            sized = any(c.post_pct is not None for c in finding.comparisons)
            false = {"ruled_out": verdicts.count(RULED_OUT)} if sized else {}
        for name, hits in false.items():
            found[name], found[f"{name}_se"] = rate(hits, len(studies))
            found["ok"] = found.get("ok", True) and found[name] <= ALPHA + MC_LIMIT * found[f"{name}_se"]
        row["ok"] = row["ok"] and found.get("ok", True)
        row["findings"].append(found)
    return row


def markdown_table(rows: list[dict]) -> str:
    def pct(value: float | None) -> str:
        return "" if value is None else f"{100 * value:.1f}%"

    lines = [
        "| cell | studies | finding | false reproduced | false contradicted | (before: any comparison) | false size ruled out "
        "| not tested | within limit |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        for f in row["findings"]:
            limit = "yes" if f.get("ok", True) else "NO"
            lines.append(
                f"| {row['cell']} | {row['studies']} | {f['finding']} | {pct(f.get('reproduced'))} | {pct(f.get('contradicted'))} "
                f"| {pct(f.get('contradicted_before'))} | {pct(f.get('ruled_out'))} | {pct(f['not_tested'])} | {limit} |"
            )
    return "\n".join(lines)


DEFAULT_CELLS = (
    Cell("null", 10, 10),
    Cell("null", 60, 10),
    Cell("null", 60, 10, documents=30, icc=0.3),
    Cell("null", 60, 10, documents=6, icc=0.3),
    Cell("post", 10, 10),
    Cell("post", 60, 10, noise=3.0),
    Cell("post", 60, 10, documents=12, icc=0.3, noise=2.0),
)


def calibrate(cells: tuple[Cell, ...], studies: int, seed: int, workers: int, log=print) -> list[dict]:
    rows = []
    for index, cell in enumerate(cells):
        started = time.perf_counter()
        rows.append(cell_row(cell, simulate(cell, studies, seed + 1000 * index, workers)))
        log(f"{cell.name}: {time.perf_counter() - started:.0f} s")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--studies", type=int, default=1000, help="simulated runs per cell")
    parser.add_argument("--seed", type=int, default=27)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    rows = calibrate(DEFAULT_CELLS, args.studies, args.seed, args.workers, log=lambda line: print(line, file=sys.stderr))
    print(markdown_table(rows))
    print(f"\n{time.perf_counter() - started:.0f} s in all, {args.workers} worker(s)")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1), encoding="utf-8")
    return 0 if all(row["ok"] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
