r"""The paper table: conditions x evaluated domains, accuracy % and AUROC as mean ± std over repeats, a
domain-average column, the best of each column (among the conditions of one source domain) in bold; as Markdown and as LaTeX
(summary.tex, booktabs).

Every table comes from pandas: Markdown from DataFrame.to_markdown, LaTeX from Styler.to_latex. Styler draws \cline between
row groups and no rule under \multicolumn headers, so the booktabs rules between source domains (\midrule) and under the
domains' headers (\cmidrule) are Styler cell commands on the first cell of their row (`\midrule A & ...`).
"""

import numpy as np
import pandas as pd

from hdmap_train.results import DOMAIN_METRICS
from hdmap_train.sweep.statistics import AVERAGE, mean_std

# (header, LaTeX header, metric, decimals, scale) of each domain's columns, from the metric table's `paper` entries
PAPER_METRICS = tuple((header, latex, key, digits, scale) for _, header, latex, key, digits, scale
                      in sorted((*m.paper[:3], m.key, *m.paper[3:]) for m in DOMAIN_METRICS if m.paper))


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    """Lines of a GitHub-flavoured Markdown table, columns aligned (pandas' to_markdown; the cells as they are)."""
    frame = pd.DataFrame(rows, columns=header, dtype=object)
    return frame.to_markdown(index=False, tablefmt="github", disable_numparse=True).splitlines()


def paper_domains(stats: pd.DataFrame) -> list[str]:
    """The evaluated domains of the paper table's columns, then the domain average."""
    domains = sorted(set(stats["target"]) - {"", AVERAGE})
    return [*domains, AVERAGE] if domains else []


def column_cells(block: pd.DataFrame, rows: list[tuple[str, str]], domain: str, metric: str, digits: int,
                 scale: float) -> list[tuple[str | None, bool]]:
    """One column of a source domain's (condition, subgroup) rows: (mean ± std, None for none; is the best rounded mean
    of several whole-domain rows) per row; subgroup rows are never bold.
    """
    found = [block.loc[(c, g, domain, metric)] if (c, g, domain, metric) in block.index else None for c, g in rows]
    found = [None if s is None or pd.isna(s["mean"]) else s for s in found]
    rounded = [None if s is None or g else round(s["mean"] * scale, digits) for s, (_, g) in zip(found, rows, strict=True)]
    whole = [r for r in rounded if r is not None]
    best = max(whole) if sum(not g for _, g in rows) > 1 and whole else None
    return [(None, False) if s is None else (mean_std(s["mean"], s["std"], digits=digits, scale=scale), r is not None and r == best)
            for s, r in zip(found, rounded, strict=True)]


def paper_cells(stats: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The paper table's cells ('mean ± std', None for no result) and which are bold (best of the column among the
    conditions of one source domain): rows (source, condition, subgroup), each condition's whole domains (subgroup '')
    followed by its subgroups (e.g. cold, warm) where the runs have them; columns (domain, metric) for each domain x
    PAPER_METRICS.
    """
    indexed = stats.set_index(["source", "condition", "subgroup", "target", "metric"])
    columns = pd.MultiIndex.from_tuples([(domain, metric) for domain in paper_domains(stats) for _, _, metric, *_ in PAPER_METRICS])
    blocks = []
    for source in sorted(indexed.index.unique("source")):
        block = indexed.loc[source]
        rows = sorted({(c, g) for c, g, target in block.index.droplevel("metric") if target != ""})
        found = {(domain, metric): column_cells(block, rows, domain, metric, digits, scale)
                 for domain in paper_domains(stats) for _, _, metric, digits, scale in PAPER_METRICS}
        index = pd.MultiIndex.from_tuples([(source, c, g) for c, g in rows])
        blocks.append(pd.DataFrame(found, index=index, columns=columns))
    names = ["source", "condition", "subgroup"]
    cells = (pd.concat(blocks).rename_axis(names) if blocks
             else pd.DataFrame(columns=columns, index=pd.MultiIndex.from_tuples([], names=names)))
    return cells.map(lambda cell: cell[0]), cells.map(lambda cell: cell[1]).astype(bool)


def row_repeats(stats: pd.DataFrame, index: pd.Index) -> list[str]:
    """The paper table's n column: '2 of 3', the jobs with a result of all jobs of each (source, condition, subgroup) row."""
    rows = stats[(stats["metric"] == "image_AUROC") & ~stats["target"].isin(["", AVERAGE])]
    found = rows.groupby(["source", "condition", "subgroup"]).agg(n=("n", "max"), total=("n_total", "first"))
    return [f"{int(found.at[key, 'n'])} of {int(found.at[key, 'total'])}" if key in found.index else "-" for key in index]


def first_columns(cells: pd.DataFrame) -> dict[str, pd.Index]:
    """The row labels: source and condition, and a subgroup column ('all' for whole domains) when any row is a subgroup."""
    labels = {"source": cells.index.get_level_values("source"), "condition": cells.index.get_level_values("condition")}
    subgroups = cells.index.get_level_values("subgroup")
    return labels | ({"subgroup": subgroups.where(subgroups != "", "all")} if (subgroups != "").any() else {})


def paper_markdown(stats: pd.DataFrame) -> list[str]:
    """The paper table in Markdown (bold: best of the column among the conditions of one source domain)."""
    cells, bold = paper_cells(stats)
    headers = {metric: header for header, _, metric, *_ in PAPER_METRICS}
    shown = cells.mask(bold, "**" + cells + "**").fillna("-")
    shown.columns = [f"{domain} {headers[metric]}" for domain, metric in shown.columns]
    labels = first_columns(cells)
    shown = pd.DataFrame({**labels, "n": row_repeats(stats, cells.index), **{c: shown[c].to_numpy() for c in shown.columns}})
    return shown.to_markdown(index=False, tablefmt="github", disable_numparse=True).splitlines()


def paper_latex(stats: pd.DataFrame) -> str:
    r"""summary.tex: the paper table as a booktabs LaTeX table (needs \usepackage{booktabs})."""
    cells, bold = paper_cells(stats)
    if cells.empty:
        return "% summary.tex: no successful job yet\n"
    headers = {metric: latex for _, latex, metric, *_ in PAPER_METRICS}
    columns = [("Avg." if domain == AVERAGE else domain, headers[metric]) for domain, metric in cells.columns]
    labels = first_columns(cells)
    sources = labels.pop("source")
    first = pd.Series(sources).ne(pd.Series(sources).shift()).to_numpy()  # the first row of each source domain
    table = pd.DataFrame({("Source", ""): sources.where(first, ""), **{(key.title(), ""): value for key, value in labels.items()},
                          ("n", ""): row_repeats(stats, cells.index),
                          **{column: cells[key].to_numpy() for column, key in zip(columns, cells.columns, strict=True)}})
    lead = 2 + len(labels)  # Source, Condition[, Subgroup], n
    styles = np.column_stack([np.where(first, "midrule: ;", ""), np.full((len(table), lead - 1), ""),
                              np.where(bold, "textbf: --rwrap;", "")])
    styles[0, 0] = ""  # the header's \midrule (hrules) opens the first source domain
    width, groups = len(PAPER_METRICS), len(columns) // len(PAPER_METRICS)
    under_headers = "".join(f"cmidrule: (lr){{{lead + 1 + width * i}-{lead + width * (i + 1)}}};" for i in range(groups))
    caption = (r"Image accuracy (\%, at the validation threshold) and AUROC per evaluated domain, mean $\pm$ std over "
               r"the repeats (n: runs with a result of the runs made"
               + (r"; Subgroup: the whole domain (all) and its subgroups" if "subgroup" in labels else "")
               + r"); Avg.: mean over the evaluated domains "
               rf"{', '.join(d for d in paper_domains(stats) if d != AVERAGE)} (the source domain included); bold: best of "
               r"each column for its source domain.")
    latex = (table.style.hide(axis="index")
             .format(lambda text: text.replace(" ± ", r" $\pm$ "), escape="latex", na_rep="--")
             .format_index(escape="latex", axis=1, level=0)
             .apply(lambda _: styles, axis=None)
             .apply_index(lambda labels: [under_headers] + [""] * (len(labels) - 1), axis=1, level=1)
             .to_latex(column_format="l" * (lead - 1) + "r" + "r" * len(columns), position="t", position_float="centering", hrules=True,
                       label="tab:hdmap-transfer", caption=caption, multicol_align="c",
                       environment="table*"))  # both columns of a two-column paper: four domains do not fit one
    return "% Written by hdmap_train.report from the sweep's metrics.json files; needs \\usepackage{booktabs}.\n" + latex
