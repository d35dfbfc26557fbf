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
import textwrap
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from hdmap_train.catalog.models import CONF_DIR, NAME_WIDTH, WIDTH, first_sentence, header_lines, model_entries, models_text
from hdmap_train.catalog.models import ModelEntry as ModelEntry  # noqa: F401 - part of the catalog's interface
from hdmap_train.errors import HdmapError

# One line per config group of `python -m hdmap_train` (groups found but not here are listed without one).
GROUP_HELP = {
    "model": "anomalib model and its arguments (Models, below)",
    "size": "paper (default) | cpu: a CPU-sized first try of any model | tiny: test-sized",
    "weights": "pretrained (default: backbones from the local cache) | random: seeded, no download needed",
    "domain": "source domain (all: every domain; or domain.source=[A,B]); the others are the targets",
    "data": "dataset layout and loading (root, resize, channels, normalisation, validation)",
    "trainer": "lightning.Trainer arguments (debug: 2 batches of 1 epoch on CPU)",
    "logger": "tensorboard (required: the run writes there) | csv (and a CSV log); +logger.<name>._target_=... adds one",
    "callbacks": "Lightning callbacks added to the run's own: +callbacks.<name>._target_=...",
    "paths": "data, cache and output directories",
    "experiment": "named conditions, overriding any of the above (experiment=glob(*) in a sweep)",
    "hparams_search": "Optuna searches maximising optimized_metric (they set --multirun themselves)",
    "hydra/launcher": "how --multirun runs its jobs: basic (one after the other), gpus, slurm, submitit_local",
    "local": "machine-specific overrides (conf/local/default.yaml, git-ignored)",
    "prepare/mapping": "domain -> (condition class, sensor) of the raw files",
}
# Which groups each command shows: (prefixes shown, prefixes hidden); a prefix covers its subgroups.
APP_GROUPS = {
    "train": ((), ("hydra", "prepare", "size_model", "weights_model")),   # chosen by size / weights
    "prepare": (("prepare", "paths"), ()),
}
ALWAYS_SHOWN = {"train": ("hydra/launcher",), "prepare": ()}


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
        description = first_sentence(header_lines(text)) or "-"
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


def print_models(options: dict, overrides: list) -> int:
    """The model list: all models, or the ones named by model= (a name or a list); HdmapError for an unknown name."""
    del overrides
    chosen = options["model"]
    names = [] if chosen is None else [str(n) for n in (chosen if isinstance(chosen, list) else [chosen])]
    entries = model_entries()
    unknown = sorted(set(names) - {entry.name for entry in entries})
    if unknown:
        raise HdmapError(f"unknown model(s): {', '.join(unknown)}; known: {', '.join(e.name for e in entries)}")
    print("\n".join(entry.text() for entry in entries if not names or entry.name in names))
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m hdmap_train.catalog [model=<name>|[a,b]]`: the model list (all models, or the ones named)."""
    from hdmap_train.arguments import Command, Key, run_command

    command = Command("catalog", "The models of conf/model/: weights, early-stopping monitor, what each is.",
                      (Key("model", "a model name or a list [draem,patchcore] (default: every model)"),),
                      ("model=patchcore", "model=[draem,patchcore]"), bare="model")
    return run_command(command, print_models, argv)
