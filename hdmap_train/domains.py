"""Domain names and the source domains of a run (light: no torch, importable by config checks and sweep readers).

`domain.source` is one domain (`A`) or a list (`[A, B]`, conf/domain/all.yaml): a run trains one model on
the union of the listed domains' training data. One source (also a one-item list) is the single-source run
of old; several give the record's `source_domain` label `domain_A+domain_B` (short form `A+B`).

The resolvers `${hdmap_source:${domain.source}}` (run names: `A`, `A+B`) and
`${hdmap_other_domains:${domain.source}}` (the default targets: the HDMAP domains that are no source) are
registered when this module is imported (hdmap_train/__init__.py imports it).
"""

from collections.abc import Iterable

from omegaconf import OmegaConf

HDMAP_DOMAINS = ("A", "B", "C", "D")
SEPARATOR = "+"  # between the source domains in a label: domain_A+domain_B, A+B


def domain_folder(domain: str) -> str:
    """'A' -> 'domain_A' (already prefixed names pass through)."""
    return domain if domain.startswith("domain_") else f"domain_{domain}"


def source_list(source) -> list[str]:
    """domain.source as a list of names as given: 'A' -> ['A'], ['A', 'B'] stays (a ListConfig too)."""
    if OmegaConf.is_config(source):
        source = OmegaConf.to_container(source)
    return [str(source)] if isinstance(source, str | int) else [str(s) for s in source]


def source_domains(source) -> list[str]:
    """domain.source as folder names: 'A' -> ['domain_A'], ['A', 'B'] -> ['domain_A', 'domain_B']."""
    return [domain_folder(name) for name in source_list(source)]


def source_label(domains: Iterable[str]) -> str:
    """The record's source_domain: 'domain_A', or 'domain_A+domain_B' for several sources."""
    return SEPARATOR.join(domains)


def short_domain(domain: str) -> str:
    """domain_A -> A, domain_A+domain_B -> A+B."""
    return SEPARATOR.join(part.removeprefix("domain_") for part in domain.split(SEPARATOR))


def record_sources(record: dict) -> list[str]:
    """The source domain folders of a metrics.json record (source_domains, or the single source_domain)."""
    return list(record.get("source_domains") or [record["source_domain"]])


SEVERAL_SOURCES_NORMALIZATION = (
    "Several source domains need one normalisation for all of them: data.normalization.mode none, per_image, or "
    "minmax/zscore with stats: source (pooled over the sources' training images); minmax_fixed and stats: per_domain "
    "do not work with a list domain.source yet"
)


def shared_normalization(mode: str, stats_from: str) -> bool:
    """Whether every domain gets the same normaliser (needed by a training set that mixes source domains)."""
    return mode in ("none", "per_image") or (mode in ("minmax", "zscore") and stats_from == "source")


def domain_problems(source, targets: list[str], known: list[str] | None) -> list[str]:
    """What is wrong with domain.source and domain.targets, one text per problem ([] if nothing).

    known: the dataset's domain folders (None when they cannot be listed yet, e.g. a missing root).
    """
    names, targets = source_list(source), [str(t) for t in targets]
    sources = [domain_folder(name) for name in names]
    problems = []
    if not names:
        problems.append("domain.source=[] names no domain: give one (domain.source=A) or a list (domain.source=[A,B])")
    if twice := [name for name, folder in zip(names, sources, strict=True) if sources.count(folder) > 1]:
        problems.append(f"domain.source={names} names {twice[0]} twice: list each source domain once")
    if known is not None and (unknown := [d for d in [*names, *targets] if domain_folder(d) not in known]):
        found = ", ".join(short_domain(k) for k in known) or "none"
        problems.append(f"domain {unknown[0]} is not in the dataset (its domains: {found}): check domain.source and domain.targets")
    if overlap := [t for t in targets if domain_folder(t) in sources]:
        problems.append(f"domain.targets={targets} include the source domain {overlap[0]}: remove it from domain.targets")
    return problems


def evaluated_results(record: dict) -> list[dict]:
    """The DomainResults of a record in table order: source_results (several sources: pooled), each source
    domain's (several sources only), then the targets'.
    """
    return [record["source_results"], *(record.get("source_domain_results") or {}).values(),
            *record["target_results"].values()]


def _short_source(source) -> str:
    """Resolver: ${hdmap_source:${domain.source}} -> 'A' or 'A+B'."""
    return short_domain(source_label(source_domains(source)))


def _other_domains(source) -> list[str]:
    """Resolver: ${hdmap_other_domains:${domain.source}} -> the HDMAP domains that are not a source."""
    sources = set(source_domains(source))
    return [name for name in HDMAP_DOMAINS if domain_folder(name) not in sources]


OmegaConf.register_new_resolver("hdmap_source", _short_source, replace=True)
OmegaConf.register_new_resolver("hdmap_other_domains", _other_domains, replace=True)
