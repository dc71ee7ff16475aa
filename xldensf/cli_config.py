"""Settings of the ``xldensf`` commands from ``--config FILE.toml`` and ``--set KEY=VALUE``.

Precedence: a flag on the command line wins over ``--set``, which wins over the file. Keys
are the command's option names (``members``, ``noise``; dashes may be written as
underscores); for ``simulate`` other keys are the simulator's configuration (``n_outputs``,
...), for ``assimilate`` the assimilation settings (``inflation``, ``localization``, ...).

The file holds a table per command and, optionally, shared top-level keys::

    seed = 0                  # shared: used by each command that has a --seed

    [observe]
    stations = 20
    noise = 0.1

    [assimilate]
    model = "lorenz96"
    members = 10
    inflation = 1.05          # an assimilation setting (no --inflation flag)

Values are TOML literals (``--set members=10``, ``--set 'variables=["x"]'``); a value that
is not valid TOML is taken as a string (``--set model=tsunami``). A value for an option
means what the same text means on the command line.

Examples
--------
>>> parse_assignment("members=10"), parse_assignment("model=tsunami")
(('members', 10), ('model', 'tsunami'))
>>> command_settings({"seed": 1, "observe": {"noise": 0.2}, "score": {"metric": ["crps"]}},
...                  "observe", ["observe", "score"])
({'seed': 1}, {'noise': 0.2})
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .errors import DataError, expected_found

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = ["read_config", "parse_assignment", "command_settings", "drop_overridden",
           "apply_settings", "COMMON_OPTIONS"]

#: Options of every command that are not settings (they cannot come from a file).
COMMON_OPTIONS = ("help", "config", "set", "verbose")


def read_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The TOML file ``path`` as a dict.

    Raises
    ------
    DataError
        A missing, unreadable or invalid TOML file.

    Examples
    --------
    >>> read_config("no-such-file.toml")
    Traceback (most recent call last):
    ...
    xldensf.errors.DataError: config file: expected a readable TOML file, found ...
    """
    try:
        with Path(path).open("rb") as handle:
            return tomllib.load(handle)
    except OSError as err:
        raise DataError(expected_found("config file", "a readable TOML file",
                                       f"{path} ({err.strerror or type(err).__name__})")
                        ) from err
    except tomllib.TOMLDecodeError as err:
        raise DataError(expected_found("config file", "valid TOML", f"{path}: {err}")) from err


def parse_assignment(text: str) -> tuple[str, Any]:
    """``"key=value"`` as ``(key, value)``: the value a TOML literal, else the bare string.

    Dashes in the key become underscores. Used as the ``type`` of ``--set``, so a malformed
    assignment is a usage error (exit status 2).

    Examples
    --------
    >>> parse_assignment("variables=['x', 'y']"), parse_assignment("time-unit=6 hours")
    (('variables', ['x', 'y']), ('time_unit', '6 hours'))
    """
    key, sep, value = text.partition("=")
    key = key.strip().replace("-", "_")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, found {text!r}")
    try:
        return key, tomllib.loads(f"value = {value.strip()}")["value"]
    except tomllib.TOMLDecodeError:
        return key, value.strip()


def command_settings(config: Mapping[str, Any], command: str,
                     commands: Iterable[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The shared top-level keys and the ``[command]`` table of a config file.

    Tables named after other commands are left out. Returns ``(shared, own)`` with dashes in
    keys replaced by underscores.
    """
    names = set(commands)
    shared = {_key(k): v for k, v in config.items() if k not in names}
    table = config.get(command, {})
    if not isinstance(table, Mapping):
        raise DataError(expected_found(f"config table [{command}]", "a table", table))
    return shared, {_key(k): v for k, v in table.items()}


def drop_overridden(levels: Sequence[Mapping[str, Any]], groups: Iterable[Sequence[str]],
                    given: Iterable[str] = ()) -> list[dict[str, Any]]:
    """The settings ``levels`` (lowest first) less the options of an exclusive group that a
    higher level sets: ``--layout`` on the command line (``given``) drops ``stations`` of
    the file, ``--set station_file=...`` drops ``layout`` of the file.

    Examples
    --------
    >>> drop_overridden([{"stations": 5, "seed": 1}, {"layout": "4x4"}],
    ...                 [("stations", "layout")])
    [{'seed': 1}, {'layout': '4x4'}]
    >>> drop_overridden([{"stations": 5}], [("stations", "layout")], given=["layout"])
    [{}]
    """
    out = [dict(level) for level in levels]
    given = set(given)
    for group in groups:
        higher = bool(given & set(group))
        for level in reversed(out):
            if higher:
                for name in group:
                    level.pop(name, None)
            higher = higher or any(name in level for name in group)
    return out


def _key(key: str) -> str:
    return str(key).replace("-", "_")


def apply_settings(parser: argparse.ArgumentParser, shared: Mapping[str, Any],
                   own: Mapping[str, Any], *, extras: bool) -> dict[str, Any]:
    """Make ``shared`` and ``own`` settings the defaults of ``parser``'s options.

    Parameters
    ----------
    parser
        The command's (sub)parser; re-parsing the command line afterwards lets flags win.
    shared
        Settings used where the command has the option and ignored elsewhere.
    own
        The command's settings (``--set`` over its table): a key that is not an option is
        returned as an extra when ``extras``, else it is a usage error.
    extras
        Whether the command takes settings beyond its options.

    Returns
    -------
    dict
        The settings that are not options.
    """
    # argparse keeps a parser's actions in the documented-by-use ``_actions`` list only.
    actions = {a.dest: a for a in parser._actions
               if a.option_strings and a.dest not in COMMON_OPTIONS}
    defaults, rest = {}, {}
    for key, value in {**{k: v for k, v in shared.items() if k in actions}, **own}.items():
        if key in actions:
            defaults[key] = _option_value(parser, actions[key], key, value)
        elif extras:
            rest[key] = value
        else:
            parser.error(f"setting {key!r}: expected one of {sorted(actions)}")
    parser.set_defaults(**defaults)
    return rest


def _option_value(parser: argparse.ArgumentParser, action: argparse.Action, key: str,
                  value: Any) -> Any:
    """``value`` converted as the same text on the command line would be."""
    if action.nargs == 0:  # a flag: store_true / store_false / count
        if not isinstance(value, bool):
            parser.error(f"setting {key!r}: expected true or false, found {value!r}")
        return value
    many = action.nargs in ("+", "*") or isinstance(action.nargs, int)
    if isinstance(value, (list, tuple)) and not many:
        parser.error(f"setting {key!r}: expected one value, found {value!r}")
    items: Sequence[Any] = list(value) if isinstance(value, (list, tuple)) else [value]
    converted = []
    for item in items:
        if isinstance(item, bool):
            item = str(item).lower()
        text = item if isinstance(item, str) else str(item)
        try:
            item = action.type(text) if callable(action.type) else text
        except argparse.ArgumentTypeError as err:
            parser.error(f"setting {key!r}: {err}")
        except (TypeError, ValueError):
            expected = getattr(action.type, "__name__", "a valid value")
            parser.error(f"setting {key!r}: expected {expected}, found {item!r}")
        if action.choices is not None and item not in action.choices:
            parser.error(f"setting {key!r}: expected one of {sorted(action.choices)}, "
                         f"found {item!r}")
        converted.append(item)
    return converted if many else converted[0]
