"""The paper table: conditions x evaluated domains, accuracy % and AUROC as mean ± std over repeats, a
domain-average column, the best of each column (among the conditions of one source domain) in bold; as Markdown and as LaTeX
(summary.tex, booktabs).
"""

import pandas as pd

from hdmap_train.sweep.statistics import AVERAGE, mean_std

# (header, metric, decimals, scale) of each domain's two columns
PAPER_METRICS = (("acc %", "image_accuracy", 1, 100.0), ("AUROC", "image_AUROC", 3, 1.0))
LATEX_HEADERS = {"acc %": r"Acc.\,(\%)", "AUROC": "AUROC"}
LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
                 "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    """Lines of a GitHub-flavoured Markdown table."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(row) + " |" for row in rows]


def paper_domains(stats: pd.DataFrame) -> list[str]:
    """The evaluated domains of the paper table's columns, then the domain average."""
    domains = sorted(set(stats["target"]) - {"", AVERAGE})
    return [*domains, AVERAGE] if domains else []


def column_cells(block: pd.DataFrame, conditions: list[str], domain: str, metric: str, digits: int,
                 scale: float) -> list[tuple[str, bool]]:
    """One column of a source domain's rows: (mean ± std, is the best rounded mean of several conditions) per condition."""
    found = [block.loc[(c, domain, metric)] if (c, domain, metric) in block.index else None for c in conditions]
    found = [None if s is None or pd.isna(s["mean"]) else s for s in found]
    rounded = [None if s is None else round(s["mean"] * scale, digits) for s in found]
    best = max((r for r in rounded if r is not None), default=None) if len(conditions) > 1 else None
    return [("-", False) if s is None else (mean_std(s["mean"], s["std"], digits=digits, scale=scale), r == best)
            for s, r in zip(found, rounded, strict=True)]


def paper_rows(stats: pd.DataFrame) -> list[tuple[str, str, list[tuple[str, bool]]]]:
    """(source, condition, cells) per row; cells: (text, bold) for each domain x PAPER_METRICS."""
    whole = stats[stats["subgroup"] == ""].set_index(["source", "condition", "target", "metric"])
    rows = []
    for source in sorted(whole.index.unique("source")):
        block = whole.loc[source]
        conditions = sorted(block.index.unique("condition"))
        columns = [column_cells(block, conditions, domain, metric, digits, scale)
                   for domain in paper_domains(stats) for _, metric, digits, scale in PAPER_METRICS]
        rows += [(source, condition, [column[i] for column in columns]) for i, condition in enumerate(conditions)]
    return rows


def repeat_counts(stats: pd.DataFrame) -> str:
    """'3' or '2-3': how many repeats the paper table's cells average."""
    counts = stats[(stats["subgroup"] == "") & (stats["metric"] == "image_AUROC") & (stats["target"] != "")]["n"]
    low, high = (int(counts.min()), int(counts.max())) if len(counts) else (0, 0)
    return str(low) if low == high else f"{low}-{high}"


def paper_markdown(stats: pd.DataFrame) -> list[str]:
    """The paper table in Markdown (bold: best of the column among the conditions of one source domain)."""
    header = ["source", "condition", *(f"{d} {h}" for d in paper_domains(stats) for h, *_ in PAPER_METRICS)]
    rows = [[source, condition, *(f"**{text}**" if bold else text for text, bold in cells)]
            for source, condition, cells in paper_rows(stats)]
    return markdown_table(header, rows)


def latex_text(text: str) -> str:
    """Text with LaTeX's special characters escaped."""
    return "".join(LATEX_SPECIAL.get(character, character) for character in text)


def latex_cell(text: str, bold: bool) -> str:
    r"""A number cell: '0.912 $\pm$ 0.013' (bold when best), '--' for none."""
    if text == "-":
        return "--"
    cell = text.replace(" ± ", r" $\pm$ ")
    return rf"\textbf{{{cell}}}" if bold else cell


def paper_latex(stats: pd.DataFrame) -> str:
    r"""summary.tex: the paper table as a booktabs LaTeX table (needs \usepackage{booktabs})."""
    domains = paper_domains(stats)
    if not domains:
        return "% summary.tex: no successful job yet\n"
    width = len(PAPER_METRICS)
    names = [r"Avg." if d == AVERAGE else latex_text(d) for d in domains]
    lines = [
        "% Written by hdmap_train.report from the sweep's metrics.json files; needs \\usepackage{booktabs}.",
        r"\begin{table}[t]", r"\centering",
        rf"\caption{{Image accuracy (\%, at the validation threshold) and AUROC per evaluated domain, mean $\pm$ std "
        rf"over {repeat_counts(stats)} repeats; Avg.: mean over the evaluated domains; bold: best of each column for "
        r"its source domain.}",
        r"\label{tab:hdmap-transfer}",
        rf"\begin{{tabular}}{{ll{'r' * width * len(domains)}}}", r"\toprule",
        "Source & Condition & " + " & ".join(rf"\multicolumn{{{width}}}{{c}}{{{name}}}" for name in names) + r" \\",
        " ".join(rf"\cmidrule(lr){{{3 + width * i}-{2 + width * (i + 1)}}}" for i in range(len(domains))),
        " & & " + " & ".join(LATEX_HEADERS[h] for _ in domains for h, *_ in PAPER_METRICS) + r" \\",
    ]
    previous = None
    for source, condition, cells in paper_rows(stats):
        if source != previous:
            lines.append(r"\midrule")
        lines.append(" & ".join([latex_text(source) if source != previous else "", latex_text(condition),
                                 *(latex_cell(text, bold) for text, bold in cells)]) + r" \\")
        previous = source
    return "\n".join([*lines, r"\bottomrule", r"\end{tabular}", r"\end{table}", ""])
