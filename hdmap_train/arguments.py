"""Every command's arguments in one style: Hydra's `key=value`, the style of `python -m hdmap_train` itself.

Users type the main command every day, so its grammar is the one they know: `key=value`, lists `[A,B]`, `null`,
`true`. The other commands (evaluate, export, report, compare, catalog, weights) are not Hydra apps (they would
make output folders and reconfigure logging, and evaluate's overrides apply to a run's stored config, not to
conf/), but they declare their keys here (`Command`) and parse them with Hydra's own override parser. Path keys
(`run=`, `dir=`, `out=`) take the rest of the argument literally: sweep job folders hold `=` and `,`; a path key
that takes several paths is repeated (`dir=a dir=b`).

`-h`/`--help` prints the usage made from the declaration (exit 0); a usage error prints its first line and one `error:` line
(exit 2); an HdmapError of the command prints its one line (exit 1). An argument of the older styles (a bare folder,
`--out X`, the `download` word) is a usage error whose line spells the same command in this style. Nothing heavy is
imported here (Hydra's parser only when a value is parsed).
"""

import os
import shlex
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hdmap_train.errors import HdmapError

KIND_WORDS = {bool: "true or false", int: "a whole number", float: "a number"}


@dataclass(frozen=True)
class Key:
    """One argument: name, one-line help, required, a path taken literally, may be repeated, default, its type."""

    name: str
    help: str
    required: bool = False
    path: bool = False
    many: bool = False
    default: Any = None
    kind: type | None = None


@dataclass(frozen=True)
class Command:
    """A command: its module name, what it does, its keys; `overrides` (non-empty) says what other key=value apply to.

    `bare` names the key that a bare word stands for (report DIR: dir; a bare job folder holds '=' and ','), `dropped` the
    older form's words that are gone (weights download): the usage error for such a command line spells it in key=value.
    """

    name: str
    summary: str
    keys: tuple[Key, ...]
    examples: tuple[str, ...]
    overrides: str = ""
    bare: str = ""
    dropped: tuple[str, ...] = ()

    @property
    def prog(self) -> str:
        """How it is called."""
        return f"python -m hdmap_train.{self.name}"

    def usage(self) -> str:
        """The help text: usage line, what it does, each key, the examples."""
        shown = [f"{k.name}=<{k.name}>" if k.required else f"[{k.name}=<{k.name}>]" for k in self.keys]
        lines = [f"usage: {self.prog} {' '.join(shown)}{' [key=value ...]' if self.overrides else ''}", "",
                 textwrap.fill(self.summary, 100), ""]
        lines += [f"  {k.name + '=':<18}{k.help}" + (" (repeat it for several)" if k.many else "") for k in self.keys]
        if self.overrides:
            lines.append(f"  {'key=value':<18}{self.overrides}")
        lines += ["", "Arguments are Hydra-style key=value, as for python -m hdmap_train. Examples:"]
        return "\n".join(lines + [f"  {self.prog} {example}" for example in self.examples])

    def parse(self, args: list[str]) -> tuple[dict, list]:
        """({key: value}, [config override]) from the command line; HdmapError on a usage error."""
        from hydra.core.override_parser.overrides_parser import OverridesParser
        from hydra.errors import OverrideParseException

        declared = {key.name: key for key in self.keys}
        options: dict[str, Any] = {key.name: [] if key.many else key.default for key in self.keys}
        overrides, seen = [], set()
        for arg in args:
            name, sep, text = arg.partition("=")
            if arg.startswith("-") or self._bare(arg):
                raise HdmapError(self._restyled(arg, args))
            key = declared.get(name)
            if key is not None and key.path:
                value = text
            else:
                try:
                    override = OverridesParser.create().parse_overrides([arg])[0]
                except OverrideParseException as exc:
                    raise HdmapError(str(exc).splitlines()[0]) from None
                if override.is_sweep_override() or override.is_delete() or override.package is not None:
                    raise HdmapError(f"{arg}: {self.name} takes single key=value arguments only")
                if key is None:
                    if not self.overrides:
                        raise HdmapError(f"{name}= is not an argument of {self.name}: it takes {', '.join(k + '=' for k in declared)}")
                    overrides.append(override)
                    continue
                value = override.value()
                kinds = (int, float) if key.kind is float else key.kind  # 1 is a float key's number too
                if key.kind is not None and (not isinstance(value, kinds) or (key.kind is not bool and isinstance(value, bool))):
                    raise HdmapError(f"{arg} must be {KIND_WORDS[key.kind]}")
            if key.many:
                options[name].append(value)
            elif name in seen:
                raise HdmapError(f"{name}= is given twice")
            else:
                options[name] = value
            seen.add(name)
        missing = [key.name + "=" for key in self.keys if key.required and options[key.name] in (None, "", [])]
        if missing:
            raise HdmapError(f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} required")
        return options, overrides

    def _bare(self, word: str) -> bool:
        """A word that is not key=value: no `=`, or a folder whose name holds one (runs/domain=A,model=draem)."""
        name, sep, _ = word.partition("=")
        return not sep or ("/" in name and name not in {key.name for key in self.keys} and (self.bare or not self.overrides))

    def _restyled(self, arg: str, args: list[str]) -> str:
        """The usage error of a bare word or --option: the whole command line in key=value, else an example."""
        declared = {key.name: key for key in self.keys}
        spelled, bare, rest = [], [], list(args)
        while rest:
            word = rest.pop(0)
            option, sep, value = word[2:].partition("=") if word.startswith("--") else ("", "", "")
            option = option.replace("-", "_")
            if option in declared and (sep or rest):
                spelled.append(f"{option}={value if sep else rest.pop(0)}")
            elif word in self.dropped:
                continue
            elif word.startswith("-") or (self._bare(word) and not self.bare):
                break
            else:
                (bare if self._bare(word) else spelled).append(word)
        else:
            if len(bare) > 1 and not declared[self.bare].many:   # catalog draem patchcore: model=[draem,patchcore]
                bare = [] if declared[self.bare].path else [f"[{','.join(bare)}]"]
            spelled = [f"{self.bare}={word}" for word in bare] + spelled
            given = {word.partition("=")[0] for word in spelled}
            if spelled and all(key.name in given for key in self.keys if key.required):
                return f"{arg}: {self.name} takes key=value arguments: {self.prog} {shlex.join(spelled)}"
        return f"{arg}: {self.name} takes key=value arguments, e.g. {self.prog} {self.examples[0]}"


def run_command(command: Command, act: Callable[[dict, list], Any], argv: list[str] | None = None) -> int:
    """Parse argv (sys.argv[1:] by default) for `command` and call act(options, overrides).

    -h/--help: the usage, exit 0; a usage error: the usage line and one `error:` line, exit 2; act raising HdmapError:
    its line, exit 1; a full or read-only disk: one line, exit 1; else act's int return value, or 0. Output piped into
    a reader that stops early (`| head`): no traceback, exit 1.
    """
    args = sys.argv[1:] if argv is None else argv
    if {"-h", "--help"} & set(args):
        try:
            print(command.usage(), flush=True)
        except BrokenPipeError:
            return _reader_gone()
        return 0
    try:
        options, overrides = command.parse(args)
    except HdmapError as exc:
        print(f"{command.usage().splitlines()[0]}   (--help for more)\nerror: {exc}", file=sys.stderr)
        return 2
    try:
        status = act(options, overrides)
        sys.stdout.flush()
    except HdmapError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return _reader_gone()
    except OSError as exc:  # a full or read-only disk while writing the results
        print(f"error: cannot write {exc.filename or 'the results'} ({exc.strerror}): free disk space or choose a "
              "writable folder, then run the command again.", file=sys.stderr)
        return 1
    return status if isinstance(status, int) else 0


def _reader_gone() -> int:
    """The reader of stdout has closed the pipe: the rest of stdout goes to /dev/null (no error at exit); 1."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 1
