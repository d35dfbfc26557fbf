"""Hand-made sweep job folders: .hydra/ files and metrics.json records as a sweep leaves them."""

import json
from pathlib import Path

from omegaconf import OmegaConf

DOMAINS = ["A", "B", "C", "D"]
SUBGROUPS = ("cold", "warm")
VERSIONS = {"python": "3.11.9", "anomalib": "2.1.0", "torch": "2.5.1"}


def result(domain: str, auroc: float, subgroups: tuple[str, ...] = SUBGROUPS) -> dict:
    """A domain result with every metric of evaluation.image_metrics, derived from auroc (subgroups: auroc -/+ 0.02)."""
    metrics = {
        "image_AUROC": auroc, "image_AUPR": auroc - 0.05, "image_pAUC_FPR_10pct": auroc - 0.1, "image_F1Score": auroc - 0.1,
        "image_precision": auroc - 0.15, "image_recall": auroc - 0.2, "image_accuracy": auroc - 0.05, "image_FPR": 1 - auroc,
        "threshold": 0.5, "oracle_F1Score": auroc, "oracle_threshold": 0.4, "threshold_gap": 0.1, "TPR_at_FPR_1pct": auroc - 0.3,
        "TPR_at_FPR_5pct": auroc - 0.2, "n_samples": 20, "n_normal": 10, "n_fault": 10,
    }
    found = {"domain": f"domain_{domain}", **metrics}
    if subgroups:
        found["subgroups"] = {name: result(domain, auroc + offset, ())
                              for name, offset in zip(subgroups, (-0.02, 0.02), strict=False)}
        for sub in found["subgroups"].values():
            sub.pop("domain")
    return found


def config(model: str, source: str, seed: int = 42, learning_rate: float = 1e-4, job: str = "") -> dict:
    """A resolved config as metrics.json's condition.config holds it (a few keys, result-neutral ones included).

    source: 'A', or 'A+B' for a job trained on several source domains (domain.source: [A, B]).
    """
    sources = source.split("+")
    return {
        "model": {"name": model, "max_epochs": 5, "module": {"learning_rate": learning_rate}},
        "trainer": {"accelerator": "cpu", "max_epochs": 5, "enable_progress_bar": False},
        "domain": {"source": sources if len(sources) > 1 else source, "targets": [d for d in DOMAINS if d not in sources]},
        "data": {"root": "/data/hdmap", "cache_dir": f"/cache/{job}", "num_workers": 0},
        "paths": {"output_dir": f"/runs/{job}"}, "name": f"{model}_{source}", "seed": seed, "ckpt_path": None,
    }


def write_job(sweep: Path, model: str, source: str, aurocs: dict[str, float] | None, error: str = "",
              overrides: list[str] | None = None, seed: int = 42, learning_rate: float = 1e-4, folder: str | None = None,
              manifest_sha256: str | None = "ab" * 32, efficiency: dict | None = None) -> Path:
    """A job folder: .hydra/config.yaml (and overrides.yaml if given), and metrics.json unless aurocs is None and no error
    (with `efficiency` as its efficiency block when given; older records have none).

    source 'A+B': trained on A and B; aurocs then holds each source domain's AUROC and the pooled one under 'A+B'.
    """
    job = sweep / (folder or f"domain={source},model={model}")
    (job / ".hydra").mkdir(parents=True)
    sources = source.split("+")
    written = {"model": {"name": model, "max_epochs": 5}, "trainer": {"max_epochs": "${model.max_epochs}"},
               "domain": {"source": sources if len(sources) > 1 else source}}
    OmegaConf.save(OmegaConf.create(written), job / ".hydra" / "config.yaml")
    if overrides is not None:
        OmegaConf.save(OmegaConf.create(overrides), job / ".hydra" / "overrides.yaml")
    resolved = config(model, source, seed, learning_rate, job.name)
    label = "+".join(f"domain_{d}" for d in sources)
    record = {"condition": {"name": f"{model}_{source}", "model": model, "config": resolved}, "source_domain": label,
              "versions": VERSIONS, "data": {"manifest": None if manifest_sha256 is None else {"sha256": manifest_sha256}}}
    if len(sources) > 1:
        record["source_domains"] = [f"domain_{d}" for d in sources]
    if aurocs is not None:
        targets = {f"domain_{d}": result(d, a) for d, a in aurocs.items() if d not in [*sources, source]}
        record |= {
            "status": "success", "error": None, "source_results": result(source, aurocs[source]), "target_results": targets,
            "avg_target_auroc": sum(r["image_AUROC"] for r in targets.values()) / len(targets) if targets else None,
            "training_info": {"fit_seconds": 12.5},
        }
        if efficiency is not None:
            record["efficiency"] = efficiency
        if len(sources) > 1:
            record["source_results"]["domain"] = label
            record["source_domain_results"] = {f"domain_{d}": result(d, aurocs[d]) for d in sources}
    elif error:
        record |= {"status": "failed", "error": error, "training_info": None}
    else:
        return job
    (job / "metrics.json").write_text(json.dumps(record))
    return job


def squeezed(markdown: str) -> str:
    """A Markdown text with the columns' padding removed (runs of spaces as one), so a row reads `| a | b |`."""
    import re

    return re.sub(r" {2,}", " ", markdown)
