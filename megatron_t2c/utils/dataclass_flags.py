"""Dataclass configs exposed as command-line flags.

Every tool keeps its options in a dataclass whose fields are declared with :func:`option`; the field's
``help`` becomes the ``--help`` text, ``snake_case`` names become ``--kebab-case`` flags, booleans get
``--flag/--no-flag``, and ``--config FILE.yaml`` loads defaults that flags on the command line override.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any, Sequence

_POSITIONAL = "positional"


def option(default: Any = dataclasses.MISSING, help: str = "", *, positional: bool = False,
           choices: Sequence[Any] | None = None, metavar: str | None = None,
           default_factory: Any = dataclasses.MISSING, aliases: Sequence[str] = (), flag: str | None = None,
           consts: dict[str, Any] | None = None, parse: Any = None) -> Any:
    """Declare a config field with its help text, and optionally: choices, a positional form, the flag's
    name when it differs from the field's (``flag="--norm-epsilon"``: megatron's spelling over a stable field
    name), extra names (``aliases=("--model",)``), and switches that store a constant in the field
    (``consts={"--bf16": "bf16"}``; in YAML ``bf16: true``), and a ``parse`` function for the flag's text
    when the field's type cannot convert it (an int or a list in one flag)."""
    metadata = {"help": help, _POSITIONAL: positional, "choices": choices, "metavar": metavar,
                "aliases": tuple(aliases), "flag": flag, "consts": dict(consts or {}), "parse": parse}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def _unwrap(tp: Any) -> tuple[Any, bool, bool]:
    """Return (element type, is_list, is_optional) for a field annotation."""
    optional = False
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        optional = len(args) < len(typing.get_args(tp))
        tp = args[0]
        origin = typing.get_origin(tp)
    if origin in (list, tuple, Sequence):
        return typing.get_args(tp)[0], True, optional
    return tp, False, optional


def add_config_arguments(parser: argparse.ArgumentParser, config_cls: type) -> None:
    """Add one flag per field of ``config_cls`` to ``parser``."""
    hints = typing.get_type_hints(config_cls)
    group = parser.add_argument_group(config_cls.__name__, (config_cls.__doc__ or "").strip().split("\n")[0])
    for f in dataclasses.fields(config_cls):
        meta = f.metadata
        elem, is_list, _ = _unwrap(hints[f.name])
        kwargs: dict[str, Any] = {"help": meta.get("help", "")}
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
        else:
            default = None
        if meta.get("choices"):
            kwargs["choices"] = list(meta["choices"])
        if meta.get("metavar"):
            kwargs["metavar"] = meta["metavar"]
        if meta.get("parse"):
            kwargs["type"] = meta["parse"]
        elif elem is bool and not is_list:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = elem
            if is_list:
                kwargs["nargs"] = "*" if meta.get(_POSITIONAL) or default is not None else "+"
        if meta.get(_POSITIONAL):
            group.add_argument(f.name, default=default, **kwargs)
        else:
            required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING  # type: ignore[misc]
            if default is not None and kwargs.get("help"):
                kwargs["help"] += " (default: %(default)s)"
            flags = (meta.get("flag") or "--" + f.name.replace("_", "-"), *meta.get("aliases", ()))
            group.add_argument(*flags, dest=f.name, default=default, required=required, **kwargs)
            for switch, const in meta.get("consts", {}).items():
                group.add_argument(switch, dest=f.name, action="store_const", const=const,
                                   help=f"same as {flags[0]} {const}")


def _load_yaml(path: str, config_classes: Sequence[type]) -> dict[str, Any]:
    import yaml

    with open(path, encoding="utf-8") as fh:
        data = yaml.safe_load(fh) or {}
    if not isinstance(data, dict):
        raise SystemExit(f"error: --config {path}: expected a mapping of option names to values")
    fields = [f for cls in config_classes for f in dataclasses.fields(cls)]
    known = {f.name for f in fields}
    aliases = {alias.lstrip("-").replace("-", "_"): f.name for f in fields
               for alias in (*f.metadata.get("aliases", ()), *([f.metadata["flag"]] if f.metadata.get("flag") else []))}
    switches = {switch.lstrip("-").replace("-", "_"): (f.name, const) for f in fields
                for switch, const in f.metadata.get("consts", {}).items()}
    values = {}
    for key, value in ((str(k).replace("-", "_"), v) for k, v in data.items()):
        if key in switches:  # `bf16: true` sets the field to the switch's constant; `false` leaves it alone
            name, const = switches[key]
            if not isinstance(value, bool):
                raise SystemExit(f"error: --config {path}: {key} is a switch (true or false), got {value!r}")
            if value:
                values[name] = const
            continue
        if key.startswith("no_") and key[3:] in known and isinstance(value, bool):  # `no-load-optim: true`
            values[key[3:]] = not value
            continue
        values[aliases.get(key, key)] = value
    unknown = sorted(set(values) - known)
    if unknown:
        raise SystemExit(f"error: --config {path}: unknown options {', '.join(unknown)}")
    return values


def build_parser(*config_classes: type, description: str = "", epilog: str = "",
                 prog: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description, epilog=epilog,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", metavar="FILE.yaml", default=None,
                        help="load option defaults from a YAML mapping; flags given on the command line win")
    for cls in config_classes:
        add_config_arguments(parser, cls)
    return parser


def parse_configs(*config_classes: type, argv: Sequence[str] | None = None, description: str = "",
                  epilog: str = "", prog: str | None = None) -> tuple[Any, ...]:
    """Parse ``argv`` into one instance of each config class (in order)."""
    parser = build_parser(*config_classes, description=description, epilog=epilog, prog=prog)
    pre, _ = parser.parse_known_args(argv)
    if pre.config:
        values = _load_yaml(pre.config, config_classes)
        parser.set_defaults(**values)
        for action in parser._actions:  # options given in the YAML are no longer required on the CLI
            if action.dest in values:
                action.required = False
    ns = vars(parser.parse_args(argv))
    out = []
    for cls in config_classes:
        out.append(cls(**{f.name: ns[f.name] for f in dataclasses.fields(cls)}))
    return tuple(out)


def parse_config(config_cls: type, argv: Sequence[str] | None = None, **kwargs: Any) -> Any:
    """Parse ``argv`` into one ``config_cls`` instance."""
    return parse_configs(config_cls, argv=argv, **kwargs)[0]
