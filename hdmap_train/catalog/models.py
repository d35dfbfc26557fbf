"""The model list of the help and of `python -m hdmap_train.catalog`: one entry per conf/model/<name>.yaml, read from
the file itself (what it is, the weights it needs, its early-stopping monitor).
"""

import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
WIDTH = 100           # help text width
NAME_WIDTH = 22       # column of the text after a model or key name
_SENTENCE_END = re.compile(r"(?<!\bal)(?<!e\.g)(?<!i\.e)\.(?=\s|$)")


@dataclass(frozen=True)
class ModelEntry:
    """One conf/model/<name>.yaml as the help describes it."""

    name: str
    summary: str     # the first sentence of the header comment
    weights: str     # what has to be on disk before it trains
    monitor: str     # checkpoint / early-stopping metric

    def text(self, width: int = WIDTH) -> str:
        """`name  summary` then `weights: ... | monitor: ...`, wrapped with a hanging indent."""
        indent = " " * (NAME_WIDTH + 2)
        first = textwrap.fill(self.summary, width, initial_indent=f"  {self.name:<{NAME_WIDTH}}",
                              subsequent_indent=indent, break_on_hyphens=False)
        second = textwrap.fill(f"weights: {self.weights} | monitor: {self.monitor}", width,
                               initial_indent=indent, subsequent_indent=indent, break_on_hyphens=False)
        return f"{first}\n{second}"


def header_lines(text: str) -> list[str]:
    """The leading comment block of a YAML file, without '#' and without the @package line."""
    lines = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        body = line[1:].strip()
        if not body.startswith("@package"):
            lines.append(body)
    return lines


def first_sentence(lines: list[str]) -> str:
    """The header's first sentence (it may run over several comment lines)."""
    text = ""
    for line in lines:
        if not line:
            break
        text = f"{text} {line}".strip()
        match = _SENTENCE_END.search(text)
        if match:
            return text[: match.end()]
    return text


def _inline_comment(text: str, key: str) -> str:
    """The comment after a top-level `key:` line, '' if none."""
    match = re.search(rf"^{re.escape(key)}:[^#\n]*#\s*(.*)$", text, re.M)
    return match.group(1).strip() if match else ""


def _weights(cfg: DictConfig, text: str) -> str:
    backbone = OmegaConf.select(cfg, "pretrained_backbone", throw_on_resolution_failure=False)
    if backbone:
        return f"timm {backbone}"
    module = cfg.get("module") or {}
    # Module arguments that point into the data directory are files the model reads (EfficientAD's teacher).
    files = [f"model.module.{key}" for key in module
             if str(OmegaConf.to_container(module, resolve=False)[key]).startswith("${paths.")]
    if files:
        return "local files " + ", ".join(files) + " (never downloaded)"
    comment = _inline_comment(text, "pretrained_backbone")
    if comment and "timm" not in comment:   # draem's comment describes the key, not its weights
        checkpoint = next((line.strip() for line in header_lines(text) if line.strip().endswith(".pth")), "")
        return f"{comment}: {checkpoint}" if checkpoint else comment
    return "none (from scratch)"


def _monitor(cfg: DictConfig, text: str) -> str:
    monitor = cfg.get("monitor")
    if monitor is None:
        return f"none ({_inline_comment(text, 'monitor') or 'no validation metric'})"
    patience = cfg.get("early_stopping_patience")
    return f"{monitor} ({cfg.get('monitor_mode', 'min')}, patience {patience})"


def model_entry(path: Path) -> ModelEntry:
    """The catalogue entry of one model config file."""
    text = path.read_text()
    cfg = OmegaConf.create(text)
    return ModelEntry(
        name=str(cfg.get("name") or path.stem),
        summary=first_sentence(header_lines(text)),
        weights=_weights(cfg, text),
        monitor=_monitor(cfg, text),
    )


def model_entries(conf_dir: Path = CONF_DIR) -> list[ModelEntry]:
    """Every conf/model/*.yaml, by name."""
    return [model_entry(path) for path in sorted((Path(conf_dir) / "model").glob("*.yaml"))]


def models_text(conf_dir: Path = CONF_DIR, width: int = WIDTH) -> str:
    """The model list as the help and `python -m hdmap_train.catalog` print it."""
    return "\n".join(entry.text(width) for entry in model_entries(conf_dir))
