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
    first = rows.iloc[0]
    corrected = len(comparison.notes) > 1
    t = ("undefined (fewer than two units, or Δ the same in every unit)" if pd.isna(first.t_p)
         else f"t = {first.t_statistic:.3f}, p = {p_value(first.t_p)}" + (f" (Holm {p_value(first.t_p_holm)})" if corrected else ""))
    w = ("undefined (fewer than two units, or no unit differs)" if pd.isna(first.wilcoxon_p)
         else f"W = {first.wilcoxon_statistic:g}, p = {p_value(first.wilcoxon_p)}"
         + (f" (Holm {p_value(first.wilcoxon_p_holm)})" if corrected else ""))
    return lines + [*markdown_table(header, cells), "",
                    f"Over {first.units} (source, seed) units: paired t-test {t}; Wilcoxon signed-rank test {w}."] + \
        [f"- {note}" for note in notes]


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
    """comparison.md: the explanation, each condition pair, the ranking."""
    lines = ["# Paired comparison", "", *explanation(comparison)]
    for (a, b), notes in comparison.notes.items():
        lines += pair_section(comparison, a, b, notes)
    return "\n".join(lines + ranking_section(comparison)) + "\n"
