"""comparison.md: what `python -m hdmap_train.compare` found, with each interval and test said in words."""

import pandas as pd

from hdmap_train.sweep.comparison import Comparison
from hdmap_train.sweep.markdown import number, text
from hdmap_train.sweep.significance import CONFIDENCE
from hdmap_train.sweep.tables import markdown_table

LEVEL = round(100 * CONFIDENCE)


def signed(value: float | None) -> str:
    """A difference with its sign, 3 decimals ('-' when none)."""
    return "-" if value is None or pd.isna(value) else f"{value:+.3f}"


def p_value(p: float | None) -> str:
    """'0.0625' ('-' when the test was not defined)."""
    return "-" if p is None or pd.isna(p) else f"{p:.4g}"


def explanation(comparison: Comparison) -> list[str]:
    """What Δ, the two intervals and the tests mean, in words."""
    return [
        "Δ = AUROC(a) − AUROC(b), the mean over the seeds of runs paired by source domain and seed. The unit that was "
        "repeated is a training run, a (source, seed) pair; the evaluated domains of one run share its weights, so "
        "they are not independent repeats.", "",
        f"- **seed {LEVEL}% CI**: a t-interval of the per-seed Δ of that domain. It says how much Δ moves when the "
        "training is repeated with another seed, the question a reader of a model comparison asks (none with one seed).",
        f"- **image {LEVEL}% CI**: a paired bootstrap over the test images ({comparison.n_resamples} resamples, seed "
        f"{comparison.seed}; normal and fault images resampled within their class, the same images for both "
        "conditions). It holds the trained runs fixed: it says how much Δ would move on other test images, not on "
        "another training run. When seeds disagree it is often much narrower than the seed interval: do not read it "
        "as the uncertainty of the model comparison.",
        "- **tests**: a paired t-test and a Wilcoxon signed-rank test over the (source, seed) units, each unit's value "
        "its AUROC averaged over the evaluated domains both runs share; with several condition pairs, the p-values "
        "are also given Holm-corrected for the number of pairs. With 3 units the smallest two-sided Wilcoxon p is 0.25.",
    ]


def pair_section(comparison: Comparison, a: str, b: str, notes: list[str]) -> list[str]:
    """One condition pair: the per-domain table and the unit-level tests."""
    rows = comparison.rows[(comparison.rows["condition_a"] == a) & (comparison.rows["condition_b"] == b)]
    lines = ["", f"## a = {a}, b = {b}", ""]
    if rows.empty:
        return lines + ["No paired jobs."] + [f"- {note}" for note in notes]
    header = ["source", "domain", "seeds", "AUROC a", "AUROC b", "Δ AUROC", f"seed {LEVEL}% CI", f"image {LEVEL}% CI"]
    cells = [[r.source, r.domain, str(r.n_seeds), number(r.auroc_a), number(r.auroc_b), signed(r.difference),
              "-" if pd.isna(r.seed_ci_low) else f"[{signed(r.seed_ci_low)}, {signed(r.seed_ci_high)}]",
              f"[{signed(r.ci_low)}, {signed(r.ci_high)}]"] for r in rows.itertuples()]
    return lines + [*markdown_table(header, cells), "", tests_line(rows.iloc[0], len(comparison.notes) > 1)] + \
        [f"- {note}" for note in notes]


def tests_line(row, corrected: bool) -> str:
    """'Over 3 (source, seed) units: paired t-test t = ..., p = ... (Holm ...); Wilcoxon signed-rank test W = ..., p = ...'."""
    t = ("undefined (fewer than two units, or Δ the same in every unit)" if pd.isna(row.t_p)
         else f"t = {row.t_statistic:.3f}, p = {p_value(row.t_p)}" + (f" (Holm {p_value(row.t_p_holm)})" if corrected else ""))
    w = ("undefined (fewer than two units, or no unit differs)" if pd.isna(row.wilcoxon_p)
         else f"W = {row.wilcoxon_statistic:g}, p = {p_value(row.wilcoxon_p)}"
         + (f" (Holm {p_value(row.wilcoxon_p_holm)})" if corrected else ""))
    return f"Over {row.units} (source, seed) units: paired t-test {t}; Wilcoxon signed-rank test {w}."


def official_section(comparison: Comparison) -> list[str]:
    """DCASE's official score of the paired runs (protocol=dcase): per source, and the tests over the units."""
    table = comparison.official
    if table.empty:
        return []
    lines = ["", "## DCASE official score (evaluation.protocol=dcase)", "",
             "Each run's official score (the harmonic mean of its AUC per domain, that domain's normals against all anomalies, "
             "and the pooled pAUC at FPR ≤ 0.1) over the domains both runs of a pair evaluated; Δ = score(a) − score(b), the "
             f"mean over the paired seeds, with the seed {LEVEL}% t-interval; the tests are over the (source, seed) units.", "",
             *markdown_table(["a", "b", "source", "seeds", "score a", "score b", "Δ score", f"seed {LEVEL}% CI"],
                             [[text(r.condition_a), text(r.condition_b), r.source, str(r.n_seeds), number(r.official_a),
                               number(r.official_b), signed(r.difference),
                               "-" if pd.isna(r.seed_ci_low) else f"[{signed(r.seed_ci_low)}, {signed(r.seed_ci_high)}]"]
                              for r in table.itertuples()]), ""]
    corrected = len(comparison.notes) > 1
    for r in table.drop_duplicates(["condition_a", "condition_b"]).itertuples():
        lines.append(f"- a = {r.condition_a}, b = {r.condition_b}: {tests_line(r, corrected)}")
    return lines


def ranking_section(comparison: Comparison) -> list[str]:
    """Mean ranks over the units, Friedman's test and where the diagram is."""
    ranking = comparison.ranking
    ranks = ranking["mean_ranks"].reindex(comparison.conditions)
    lines = ["", "## Mean rank over (source, seed) units", "",
             f"1 = highest AUROC of a run (mean over its evaluated domains; ties share their rank), over the {ranking['units']} "
             "units every condition ran.", "",
             *markdown_table(["condition", "mean rank"], [[text(c), number(r, 2)] for c, r in ranks.items()])]
    if ranking["friedman"]:
        statistic, p = ranking["friedman"]
        lines += ["", f"Friedman test over the units: χ² = {statistic:.3f}, p = {p_value(p)}. Nemenyi post-hoc p-values "
                  "(critical_difference.png with out=: conditions joined by a bar are not significantly different at α = 0.05):", "",
                  *markdown_table(["", *map(text, ranking["nemenyi"].columns)],
                                  [[text(c), *(p_value(p) for p in row)] for c, row in ranking["nemenyi"].iterrows()])]
    return lines


def comparison_markdown(comparison: Comparison) -> str:
    """comparison.md: the explanation, each condition pair, DCASE's official score (protocol=dcase), the ranking."""
    lines = ["# Paired comparison", "", *explanation(comparison)]
    for (a, b), notes in comparison.notes.items():
        lines += pair_section(comparison, a, b, notes)
    return "\n".join(lines + official_section(comparison) + ranking_section(comparison)) + "\n"
