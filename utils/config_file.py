"""Option values from a `--config` file (JSON or YAML) and from old option names: `load_config_file` reads the
file, `upgrade_keys` renames keys of earlier versions (`LEGACY_KEYS`), and `check_keys` checks every value as the
command line would (unknown names, the typed validators' `type=`, `choices`), raising ValueError naming the file
and the key. `utils.config.parse_config` puts them together.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Mapping
from pathlib import Path, PurePath
from typing import Any

import yaml

# Keys written into config.json for the record that are not options (ignored when the file is read back).
DERIVED_KEY = "_derived"
# Option names of earlier versions -> today's. A 30-s epoch owns the word "epoch", so a pass over the training
# set is a "pass"; the learning-rate option says it is the base rate of the batch scaling rule. The old flags stay
# accepted (listed in --help beside the new ones) and --config files with the old keys still load.
LEGACY_KEYS: dict[str, str] = {
    "epochs": "passes",
    "warmup_epochs": "warmup_passes",
    "lr": "base_lr",
    "context_epochs": "context_passes",
    "context_lr": "context_base_lr",
}


def _option_dests(parser: argparse.ArgumentParser) -> set[str]:
    return {action.dest for action in parser._actions if action.dest != argparse.SUPPRESS}


def upgrade_keys(parser: argparse.ArgumentParser, values: Mapping[str, Any]) -> dict[str, Any]:
    """`values` with the old option names of `LEGACY_KEYS` (`epochs`, `lr`, ...) renamed to today's, where
    `parser` has today's option (an explicit new key wins over an old one)."""
    dests = _option_dests(parser)
    upgraded = dict(values)
    for old, new in LEGACY_KEYS.items():
        if old in upgraded and old not in dests and new in dests:
            value = upgraded.pop(old)
            upgraded.setdefault(new, value)
    return upgraded


def _choice_error(action: argparse.Action, value: Any) -> str | None:
    """Why `value` (a config-file value after its `type=` conversion; for an nargs option, a list of such) is not
    one of `action.choices`, as the command line would reject it; None when it is, or the option has no choices.
    null is accepted only where it is the option's default (its "not given": `"task": null`)."""
    if action.choices is None or (value is None and action.default is None):
        return None
    many = action.nargs not in (None, "?")
    allowed = f"one of: {', '.join(str(choice) for choice in action.choices)}"
    if many and value is not None and not isinstance(value, (list, tuple)):
        return f"should be a list, each item {allowed}"
    for item in value if many and value is not None else [value]:
        try:
            if item is not None and item in action.choices:
                continue
        except TypeError:  # an unhashable item (a list, a mapping) against dict choices
            pass
        return f"should be {'a list, each item ' if many else ''}{allowed}"
    return None


def _as_choice_text(action: argparse.Action, value: Any) -> Any:
    """A number that YAML read from text a choice spells (`hypopnea_rule: 4` for the choice "4") as that text,
    as the command line reads `--hypopnea-rule 4`; any other value unchanged."""
    if action.type is not None or action.choices is None:
        return value
    many = action.nargs not in (None, "?")

    def text(item: Any) -> Any:
        number = isinstance(item, (int, float)) and not isinstance(item, bool)
        return str(item) if number and str(item) in [str(c) for c in action.choices if isinstance(c, str)] else item

    return [text(item) for item in value] if many and isinstance(value, (list, tuple)) else text(value)


def check_keys(parser: argparse.ArgumentParser, values: Mapping[str, Any], where: str) -> dict[str, Any]:
    """`values` (option dest -> value, e.g. from a config file; old names upgraded, `upgrade_keys`) checked as the
    command line would be: unknown names, wrongly typed or out-of-range values and a value that is not one of the
    option's `choices` raise ValueError naming `where` and the key. Returns the values with the typed validators'
    conversions applied (e.g. `"1e-3"` -> 0.001)."""
    upgraded = upgrade_keys(parser, values)
    named = {
        new: f"{old} (now {new})"
        for old, new in LEGACY_KEYS.items()
        if old in values and new in upgraded and new not in values
    }  # an error names the key as the file wrote it
    values = upgraded
    unknown = sorted(set(values) - _option_dests(parser))
    if unknown:
        known = ", ".join(sorted(_option_dests(parser) - {"help"}))
        raise ValueError(f"{where}: unknown option(s) {', '.join(unknown)}; known options: {known}")
    checked = dict(values)
    flags = (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse.BooleanOptionalAction)
    for action in parser._actions:
        if action.dest not in values:
            continue
        if values[action.dest] is None:  # null: "not given", so a number, switch or choice must then default to None
            valued = action.choices is not None or getattr(action.type, "checks_values", False)
            if action.default is not None and (valued or action.type in (int, float) or isinstance(action, flags)):
                allowed = f"; one of: {', '.join(map(str, action.choices))}" if action.choices is not None else ""
                raise ValueError(
                    f"{where}: option {named.get(action.dest, action.dest)} = null: give a value (default "
                    f"{str(action.default) if isinstance(action.default, PurePath) else repr(action.default)}{allowed}) or "
                    "leave the key out"
                )
            continue
        value = values[action.dest]
        if action.nargs == "+" and isinstance(value, (list, tuple)) and not value:
            raise ValueError(f"{where}: option {named.get(action.dest, action.dest)} = [] should name at least one")
        if isinstance(action, flags):
            if not isinstance(value, bool):
                raise ValueError(
                    f"{where}: option {named.get(action.dest, action.dest)} = {value!r} should be true/false"
                )
        elif getattr(action.type, "checks_values", False):
            many = action.nargs not in (None, "?")
            if many and not isinstance(value, (list, tuple)):
                raise ValueError(f"{where}: option {named.get(action.dest, action.dest)} = {value!r} should be a list")
            try:
                checked[action.dest] = [action.type(item) for item in value] if many else action.type(value)
            except argparse.ArgumentTypeError as err:
                wanted = re.sub(r"^must be (.*), got .*$", r"should be \1", str(err))
                raise ValueError(
                    f"{where}: option {named.get(action.dest, action.dest)} = {value!r} {wanted}"
                ) from None
        elif action.type in (int, float) and action.nargs is None and not isinstance(value, str):
            expected = int if action.type is int else (int, float)
            if not isinstance(value, expected) or isinstance(value, bool):
                kind = "an integer" if expected is int else "a number"
                raise ValueError(f"{where}: option {named.get(action.dest, action.dest)} = {value!r} should be {kind}")
        elif action.choices is None and action.type not in (int, float) and type(action) in TEXT_ACTIONS:
            checked[action.dest] = _text_value(action, value, f"{where}: option {named.get(action.dest, action.dest)}")
        checked[action.dest] = _as_choice_text(action, checked[action.dest])
        problem = _choice_error(action, checked[action.dest])  # argparse checks choices after type=, as here
        if problem:
            raise ValueError(f"{where}: option {named.get(action.dest, action.dest)} = {value!r} {problem}")
    return checked


TEXT_ACTIONS = (argparse._StoreAction, argparse._AppendAction)  # plain options; others check their own values


def _text_value(action: argparse.Action, value: Any, what: str) -> Any:
    """A file value of an option whose command-line value is text (a path, a name, a comma list): a number is
    taken as its text, which argparse then converts as it would the command line's. Anything else (a list for
    one path, one text for a list option, a mapping, true/false) is a ValueError naming the option, rather than
    a fault deep in the run."""
    many = action.nargs in ("*", "+") or isinstance(action.nargs, int) or isinstance(action, argparse._AppendAction)
    free = action.type not in (None, str, Path)  # its own parser (a comma list, NAME=RUN pairs) may take a list

    def text(item: Any) -> Any:
        if isinstance(item, (str, Path)):  # a Path: a script's own defaults
            return item
        if isinstance(item, (int, float)) and not isinstance(item, bool):
            return str(item)
        if free and not many and isinstance(item, (list, tuple, dict)):
            return item
        raise ValueError(f"{what} = {value!r} should be {'a list of texts' if many else 'a text'}")

    if not many:
        return text(value)
    if not isinstance(value, (list, tuple)):  # as the command line gives; one path is a list of one
        raise ValueError(f"{what} = {value!r} should be a list of texts")
    return [text(item) for item in value]


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a JSON (.json) or YAML (.yaml/.yml, or anything else) mapping of option names to values.

    Keys may use dashes or underscores (`batch-size` or `batch_size`). The `config` key and the `_derived`
    record of a saved config.json are ignored, so a run's config.json can be passed back as `--config`.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: config file not found")
    try:
        text = path.read_text()
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not a JSON or YAML text file ({err.reason} at byte {err.start})") from err
    try:
        values = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        mark, problem = getattr(err, "problem_mark", None), getattr(err, "problem", None)
        where = f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark and problem else str(err)
        raise ValueError(f"{path}: cannot parse config file ({' '.join(where.split())})") from err
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ValueError(
            f"{path}: a config file must hold a mapping of option names to values, got {type(values).__name__}"
        )
    values = {str(key).replace("-", "_"): value for key, value in values.items()}
    values.pop("config", None)
    values.pop(DERIVED_KEY, None)
    return values
