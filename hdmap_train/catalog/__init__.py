"""What the help texts list, read from conf/ itself: models, config groups, prepare's keys.

`python -m hdmap_train.catalog` prints one entry per model of conf/model/: what it is (the first sentence
of the file's header comment), the weights it needs (``pretrained_backbone``, module arguments that point
at local files, or its comment) and its early-stopping monitor (``monitor``, ``monitor_mode``,
``early_stopping_patience``). The same text is in `python -m hdmap_train --help` through the OmegaConf
resolvers registered when this module is imported (hdmap_train/__init__.py imports it):

- ``${hdmap_models:}``: the model list;
- ``${hdmap_config_groups:train}`` / ``${hdmap_config_groups:prepare}``: the config groups (group:
  options) that belong to `python -m hdmap_train` or to `python -m hdmap_train.prepare`; Hydra's own
  $APP_CONFIG_GROUPS lists every group of conf/ for both;
- ``${hdmap_group_options:prepare/mapping}``: the options of one group with their header comment;
- ``${hdmap_config_keys:prepare,prepare}``: the keys below ``prepare:`` of conf/prepare.yaml with
  their value and comment.

Their outputs are written for Hydra's help template (a ``string.Template``): every ``$`` is doubled.
Only omegaconf and the standard library are imported here (hydra lazily, when composing): no torch,
lightning or anomalib, so the help stays instant.
"""

import re
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
WIDTH = 100           # help text width
NAME_WIDTH = 22       # column of the text after a model or key name

# One line per config group of `python -m hdmap_train` (groups found but not here are listed without one).
GROUP_HELP = {
    "model": "anomalib model and its arguments (Models, below)",
    "size": "paper (default) | cpu: a CPU-sized first try of any model | tiny: test-sized",
    "domain": "source domain (all: every domain; or domain.source=[A,B]); the others are the targets",
    "data": "dataset layout and loading (root, resize, channels, normalisation, validation)",
    "trainer": "lightning.Trainer arguments (debug: 2 batches of 1 epoch on CPU)",
    "paths": "data, cache and output directories",
    "experiment": "named conditions, overriding any of the above (experiment=glob(*) in a sweep)",
    "hparams_search": "Optuna searches maximising optimized_metric (they set --multirun themselves)",
    "hydra/launcher": "how --multirun runs its jobs: basic (one after the other), gpus, slurm, submitit_local",
    "local": "machine-specific overrides (conf/local/default.yaml, git-ignored)",
    "prepare/mapping": "domain -> (condition class, sensor) of the raw files",
}
# Which groups each command shows: (prefixes shown, prefixes hidden); a prefix covers its subgroups.
APP_GROUPS = {
    "train": ((), ("hydra", "prepare", "size_model")),   # size_model: the size=... files, chosen by size
    "prepare": (("prepare", "paths"), ()),
}
ALWAYS_SHOWN = {"train": ("hydra/launcher",), "prepare": ()}
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


def _header(text: str) -> list[str]:
    """The leading comment block of a YAML file, without '#' and without the @package line."""
    lines = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        body = line[1:].strip()
        if not body.startswith("@package"):
            lines.append(body)
    return lines


def _first_sentence(lines: list[str]) -> str:
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
        checkpoint = next((line.strip() for line in _header(text) if line.strip().endswith(".pth")), "")
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
        summary=_first_sentence(_header(text)),
        weights=_weights(cfg, text),
        monitor=_monitor(cfg, text),
    )


def model_entries(conf_dir: Path = CONF_DIR) -> list[ModelEntry]:
    """Every conf/model/*.yaml, by name."""
    return [model_entry(path) for path in sorted((Path(conf_dir) / "model").glob("*.yaml"))]


def models_text(conf_dir: Path = CONF_DIR, width: int = WIDTH) -> str:
    """The model list as the help and `python -m hdmap_train.catalog` print it."""
    return "\n".join(entry.text(width) for entry in model_entries(conf_dir))


def _groups_from_hydra() -> dict[str, list[str]] | None:
    """Group -> options from Hydra's config loader (conf/, hydra.searchpath and plugins), None before Hydra starts."""
    try:
        from hydra.core.global_hydra import GlobalHydra
        from hydra.core.object_type import ObjectType
    except ImportError:  # pragma: no cover - hydra is a dependency
        return None
    if not GlobalHydra.instance().is_initialized():
        return None
    loader = GlobalHydra.instance().config_loader()
    groups: dict[str, list[str]] = {}

    def walk(parent: str) -> None:
        for group in loader.list_groups(parent):
            name = f"{parent}/{group}" if parent else group
            if name == "hydra":   # Hydra's own groups: only the launchers are shown (each listing costs ~10 ms)
                groups["hydra/launcher"] = sorted(loader.get_group_options("hydra/launcher", results_filter=ObjectType.CONFIG))
                continue
            options = loader.get_group_options(name, results_filter=ObjectType.CONFIG)
            if options:
                groups[name] = sorted(options)
            walk(name)

    walk("")
    return groups


def _groups_from_dir(conf_dir: Path = CONF_DIR) -> dict[str, list[str]]:
    """Group -> options of the config files below conf_dir (the primary configs at its top are no group)."""
    groups: dict[str, list[str]] = {}
    for path in sorted(Path(conf_dir).rglob("*.yaml")):
        group = path.parent.relative_to(conf_dir).as_posix()
        if group != ".":
            groups.setdefault(group, []).append(path.stem)
    groups.setdefault("hydra/launcher", []).append("basic")
    return {group: sorted(options) for group, options in groups.items()}


def _covered(group: str, prefixes: tuple[str, ...]) -> bool:
    return any(group == prefix or group.startswith(prefix + "/") for prefix in prefixes)


def app_groups(app: str = "train", conf_dir: Path = CONF_DIR) -> dict[str, list[str]]:
    """The config groups (with their options) that `python -m hdmap_train` (train) or its prepare command use."""
    if app not in APP_GROUPS:
        msg = f"unknown app '{app}': one of {', '.join(APP_GROUPS)}"
        raise ValueError(msg)
    shown, hidden = APP_GROUPS[app]
    found = _groups_from_hydra() or _groups_from_dir(conf_dir)
    order = [*GROUP_HELP, *sorted(found)]
    return {
        group: found[group] for group in dict.fromkeys(order)
        if group in found and (group in ALWAYS_SHOWN[app]
                               or ((not shown or _covered(group, shown)) and not _covered(group, hidden)))
    }


def groups_text(app: str = "train", conf_dir: Path = CONF_DIR, width: int = WIDTH) -> str:
    """`group=  option, option, ...` and the group's description, one entry per group."""
    indent = " " * (NAME_WIDTH + 2)
    entries = []
    for group, options in app_groups(app, conf_dir).items():
        entries.append(textwrap.fill(", ".join(options), width, initial_indent=f"  {group + '=':<{NAME_WIDTH}}",
                                     subsequent_indent=indent, break_on_hyphens=False))
        if group in GROUP_HELP:
            entries.append(textwrap.fill(GROUP_HELP[group], width, initial_indent=indent, subsequent_indent=indent))
    return "\n".join(entries)


def group_options_text(group: str, conf_dir: Path = CONF_DIR, width: int = WIDTH) -> str:
    """Each option of one group of conf_dir with the first sentence of its header comment."""
    indent = " " * (NAME_WIDTH + 2)
    lines = []
    for path in sorted((Path(conf_dir) / group).glob("*.yaml")):
        text = path.read_text()
        description = _first_sentence(_header(text)) or "-"
        domains = OmegaConf.create(text).get("domains")
        if isinstance(domains, DictConfig) and all("condition" in d and "sensor" in d for d in domains.values()):
            # a prepare/mapping option: which raw files each domain reads
            pairs = ", ".join(f"{name} {d.condition}/{d.sensor}" for name, d in domains.items())
            description = f"{pairs} (class/sensor). {description}"
        lines.append(textwrap.fill(description, width, initial_indent=f"  {path.stem:<{NAME_WIDTH}}",
                                   subsequent_indent=indent))
    return "\n".join(lines)


_KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z_][\w-]*):(?P<value>[^#]*?)\s*(?:#\s*(?P<comment>.*))?$")


def config_keys(config: str, section: str, conf_dir: Path = CONF_DIR) -> list[tuple[str, str, str]]:
    """(dotted key, value as written, comment) of every key below the top-level `section:` of conf/<config>.yaml."""
    keys: list[tuple[str, str, str]] = []
    inside = False
    stack: list[tuple[int, str]] = []
    for line in (Path(conf_dir) / f"{config}.yaml").read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _KEY_LINE.match(line)
        if not line.startswith(" "):
            inside = bool(match) and match.group("key") == section
            stack = [(0, section)]
            continue
        if not inside or not match:
            continue
        depth = len(match.group("indent"))
        while stack and stack[-1][0] >= depth:
            stack.pop()
        stack.append((depth, match.group("key")))
        keys.append((".".join(key for _, key in [(0, section), *stack[1:]] if key),
                     match.group("value").strip(), (match.group("comment") or "").strip()))
    return keys


def keys_text(config: str, section: str, conf_dir: Path = CONF_DIR, width: int = WIDTH) -> str:
    """`key=value` then its comment, one entry per key below `section:` of conf/<config>.yaml."""
    indent = " " * 6
    entries = []
    for key, value, comment in config_keys(config, section, conf_dir):
        entries.append(f"  {key}={value}" if value else f"  {key}:")
        if comment:
            entries.append(textwrap.fill(comment, width, initial_indent=indent, subsequent_indent=indent))
    return "\n".join(entries)


def _for_template(text: str) -> str:
    """Hydra substitutes $NAME in its help template (string.Template): a literal $ is written $$."""
    return text.replace("$", "$$")


def _merging(root: object) -> bool:
    """Whether an OmegaConf merge into ``root`` is under way (OmegaConf.merge and Hydra's composition set this flag).

    A merge dereferences every interpolation it writes over, only to see whether it points at a config
    node; Hydra's composition writes over hydra.help.template (HydraConf's schema comes after the help
    config), so without this check every run, test and sweep job would build the help texts while composing.
    """
    return isinstance(root, DictConfig) and bool(root._get_flag("no_deepcopy_set_nodes"))


def _help_resolver(build):
    """A resolver returning ``build(*args)`` for the help template, '' while a merge is under way."""
    def resolver(*args, _root_=None):
        return "" if _merging(_root_) else _for_template(build(*(str(arg) for arg in args)))
    return resolver


def register_resolvers() -> None:
    """The help resolvers (see the module docstring); registering again replaces them."""
    resolvers = {
        "hdmap_models": lambda: models_text(),
        "hdmap_config_groups": lambda app="train": groups_text(app),
        "hdmap_group_options": group_options_text,
        "hdmap_config_keys": keys_text,
    }
    for name, build in resolvers.items():
        OmegaConf.register_new_resolver(name, _help_resolver(build), replace=True, use_cache=False)


register_resolvers()


def main(argv: list[str] | None = None) -> int:
    """`python -m hdmap_train.catalog [MODEL ...]`: the model list (all models, or the ones named)."""
    names = list(sys.argv[1:] if argv is None else argv)
    entries = model_entries()
    unknown = sorted(set(names) - {entry.name for entry in entries})
    if unknown:
        print(f"unknown model(s): {', '.join(unknown)}; known: {', '.join(e.name for e in entries)}", file=sys.stderr)
        return 2
    print("\n".join(entry.text() for entry in entries if not names or entry.name in names))
    return 0
