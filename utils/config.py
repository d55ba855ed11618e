"""Command-line configuration shared by every train.py (docs/training.md §4).

One parser with five option groups (data, model, optimisation, run, distributed). A script states its own defaults
(`build_parser(defaults={...})`), may add options of its own, and parses with `parse_config`, which applies the
precedence

    parser defaults  <  script defaults  <  --config FILE (JSON or YAML)  <  explicit command-line flags

`parse_config` returns a frozen `Config`: what a script decides from the options and the data (a monitor metric
`auto` made concrete, a batch size clipped to a small training set, a phase's own settings) is a new config made
with `cfg.replace(...)` before training starts, never an assignment (which raises). The resolved configuration is
saved beside the outputs (`save_config`), so config.json says what ran, and can be passed back as `--config` to
rerun the same job.

Every value is checked at parse time, and a `--config` file's values go through the same typed validators
(`positive_int`, `fraction`, ...: argparse `type=` functions defined once here) and the same `choices` as the
command line (`utils.config_file.check_keys`); an unknown key is an error. Bad input ends as one `error:` line
and exit status 2 (`ArgumentParser.error`, `UsageError` + `reported_errors` in each script's `main`).

config.json rule: a training script writes it only when training really starts, after the options, data and
checkpoints have been checked, so a run that fails on its input changes nothing in OUT. When OUT already holds a
config.json with different options (a finished run rerun with other options, a resume with a larger
--max-steps), that file is kept as `config.<n>.json` (n = 1, 2, ...) before the new one is written.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from utils.config_file import DERIVED_KEY, check_keys, load_config_file

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_HISTORY_HELP = (
    "config.json is written when training really starts (after the data, checkpoints and options "
    "are checked); an earlier config.json with other options there is kept as config.<n>.json"
)


# --------------------------------------------------------------------------- errors
class UsageError(Exception):
    """Input the user must fix: an option value, the data folder, a checkpoint, the output folder. The message names
    the option or file. Library code raises it; a script's `main` turns it into one `error:` line and exit status 2
    (`reported_errors`)."""


class Interrupted(Exception):
    """A run stopped by Ctrl-C or SIGTERM after saving what resumes it; the message says where and how. A script's
    `main` prints it as one `interrupted:` line, exit status 130 (`reported_errors`)."""


def worker_message(text: str) -> str:
    """An error's own message: one a DataLoader worker raised reaches the main process as "Caught <type> in
    DataLoader worker process N. Original Traceback ...", whose last line holds it after the type's name; any
    other message is returned as it is."""
    text = text.strip()
    if text.startswith("Caught ") and "\nOriginal Traceback" in text:
        return re.sub(r"^[\w.]+: ", "", text.splitlines()[-1].strip())
    return text


def one_line(err: BaseException | str) -> str:
    """The first line of an error message (torch and friends add paragraphs of advice; a loader worker's
    traceback: `worker_message`)."""
    text = worker_message(str(err))
    return text.splitlines()[0] if text else type(err).__name__


class ErrorExit(SystemExit):
    """SystemExit with an exit status whose str() is the message already printed (callers and tests can read it)."""

    def __init__(self, message: str, code: int):
        super().__init__(code)
        self.message = message

    def __str__(self) -> str:
        return self.message


@contextmanager
def reported_errors() -> Iterator[None]:
    """Wrap a training script's `main`: a `UsageError` becomes `error: <message>` on stderr and exit status 2; a
    training failure (`FloatingPointError`: a non-finite loss) becomes `error: <message>` and exit status 1; Ctrl-C
    or SIGTERM one `interrupted:` line and exit status 130 (training saves last.pt first: `Interrupted`). Anything
    else is a bug and keeps its traceback. In every case a run folder the script made and wrote nothing into is
    removed again (`utils.resume.discard_unused_run_folders`)."""
    try:
        try:
            yield
        except BaseException:
            from utils.resume import discard_unused_run_folders  # here: that module imports this one

            discard_unused_run_folders()  # a run folder this one made and wrote nothing into goes
            raise
    except UsageError as err:
        message = worker_message(str(err))  # raised in a loader worker: its own message
        print(f"error: {message}", file=sys.stderr, flush=True)
        raise ErrorExit(message, 2) from None
    except FloatingPointError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        raise ErrorExit(str(err), 1) from None
    except Interrupted as err:
        print(f"interrupted: {err}", file=sys.stderr, flush=True)
        raise ErrorExit(str(err), 130) from None
    except KeyboardInterrupt:
        message = (
            "stopped by Ctrl-C; what was written before stays (rerun the command: training resumes from a last.pt "
            "it wrote, and recordings encoded into --cache-dir are read back)"
        )
        print(f"interrupted: {message}", file=sys.stderr, flush=True)
        raise ErrorExit(message, 130) from None


# --------------------------------------------------------------------------- the resolved configuration
class FrozenConfigError(AttributeError):
    """An assignment to a field of a `Config` (a resolved configuration does not change; `replace` makes a new one)."""


class Config:
    """A resolved configuration: read-only options with attribute access (`cfg.base_lr`), as `parse_config`
    returns them. What a script decides after parsing (a value taken from the data, a phase's own settings) is a
    new config, `cfg.replace(batch_size=64)`; assigning `cfg.batch_size = 64` raises `FrozenConfigError`. So
    the config a run saves as config.json (`save_config`) is the one it ran with.

    `vars(cfg)` is a read-only mapping of the fields; `dict(vars(cfg))` a plain copy. The fields themselves are
    stored as given (a list value stays a list: do not change it in place).
    """

    __slots__ = ("_values",)

    def __init__(self, values: Mapping[str, Any] | None = None, /, **fields: Any):
        object.__setattr__(self, "_values", MappingProxyType({**dict(values or {}), **fields}))

    @property
    def __dict__(self) -> Mapping[str, Any]:  # what vars(cfg) returns: a read-only view
        return self._values

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name == "_values":  # not a field (copy/pickle probe before __init__ ran)
            raise AttributeError(name)
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(f"config has no option {name!r}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise FrozenConfigError(f"config option {name!r} is read-only; make a new config with cfg.replace({name}=...)")

    def __delattr__(self, name: str) -> None:
        raise FrozenConfigError(f"config option {name!r} is read-only")

    def __contains__(self, name: str) -> bool:
        return name in self._values

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (Config, argparse.Namespace)):
            return dict(self._values) == dict(vars(other))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # equal configs compare by value; fields may be lists

    def __repr__(self) -> str:
        return f"Config({', '.join(f'{key}={value!r}' for key, value in self._values.items())})"

    def __reduce__(self):  # pickle / copy: rebuilt from its fields
        return (Config, (dict(self._values),))

    def replace(self, **changes: Any) -> Config:
        """A new config with `changes` applied; a name that is not a field is an error (a misspelt option would
        otherwise be a silent new field)."""
        unknown = sorted(set(changes) - set(self._values))
        if unknown:
            raise KeyError(f"config has no option {', '.join(unknown)}")
        return Config(self._values, **changes)


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Help with each option's default, except None: such an option is computed or off when not given, and its
    help says which ("(default: None)" would say nothing); nor for a switch (`store_true` / `store_false`), whose
    "(default: True)" of `--no-monitor` would read as the switch being on."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
            return action.help or ""
        return super()._get_help_string(action)


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the project's one-line errors: `error: --base-lr must be > 0, got -1` on stderr, exit status 2.

    `required_options` (dest names, see `mark_required`) are shown as required in the usage line; they are
    checked by `parse_config`, after a `--config` file may have given them (argparse's own `required=` cannot see
    file values)."""

    def __init__(self, *args: Any, **kwargs: Any):
        if kwargs.get("formatter_class") is argparse.ArgumentDefaultsHelpFormatter:
            kwargs["formatter_class"] = DefaultsHelpFormatter
        super().__init__(*args, **kwargs)
        self.required_options: set[str] = set()

    def error(self, message: str):
        message = re.sub(r"^argument ([^:]+): (must|should|expected)", r"\1 \2", message)
        message = re.sub(r"^argument ", "", message)
        self.exit(2, f"error: {message} (see --help)\n")

    def _get_formatter(self) -> argparse.HelpFormatter:
        """Usage and help show `required_options` without brackets (argparse decides by `action.required`)."""
        for action in self._actions:
            if action.dest in self.required_options:
                action.required = True
        return super()._get_formatter()

    def parse_known_args(self, args=None, namespace=None):
        for action in self._actions:  # required in usage only: parse_config checks them (file values count)
            if action.dest in self.required_options:
                action.required = False
        return super().parse_known_args(args, namespace)


def mark_required(parser: argparse.ArgumentParser, *dests: str) -> argparse.ArgumentParser:
    """Show the options `dests` as required in `parser`'s usage (pass the same names to `parse_config`'s
    `required`, or check them after parsing)."""
    parser.required_options = set(getattr(parser, "required_options", set())) | set(dests)
    return parser


def script_prog(script: str | Path) -> str:
    """The command a script's usage line names: `python pretrained/unimodal/eeg/train.py` (its path from the
    repository root; either form, `python -m pretrained.unimodal.eeg.train` too, runs it)."""
    path = Path(script)
    if path.is_absolute():
        try:
            path = path.resolve().relative_to(REPO_ROOT)
        except ValueError:
            pass
    return f"python {path.as_posix()}"


# --------------------------------------------------------------------------- typed option values
def bounded(
    kind: type, low: float | None = None, high: float | None = None, low_open: bool = False, high_open: bool = False
) -> Callable[[Any], Any]:
    """An argparse `type=` that reads an int or a finite float (from command-line text or a config-file value)
    and checks it against [low, high] (`low_open` / `high_open`: that end excluded); argparse.ArgumentTypeError
    otherwise. `parse_config` runs config-file values through the same function."""
    if low is not None and high is not None:
        text = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    elif low is not None:
        text = f"{'>' if low_open else '>='} {low:g}"
    else:
        raise ValueError("bounded: give at least the lower bound")
    noun = "an integer " if kind is int else ""

    def check(value: Any) -> Any:
        try:
            if isinstance(value, bool) or (kind is int and isinstance(value, float)):
                raise ValueError
            number = kind(value.strip() if isinstance(value, str) else value)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"must be {noun or 'a number '}{text}, got {value!r}") from None
        if kind is float and not math.isfinite(number):
            raise argparse.ArgumentTypeError(f"must be a finite number {text}, got {value!r}")
        too_low = low is not None and (number <= low if low_open else number < low)
        too_high = high is not None and (number >= high if high_open else number > high)
        if too_low or too_high:
            raise argparse.ArgumentTypeError(f"must be {noun}{text}, got {number:g}")
        return number

    check.__name__ = f"{kind.__name__} {text}"
    check.checks_values = True  # parse_config applies it to --config values too
    return check


def path_arg(value: str | Path) -> Path:
    """A file or folder option's value as a Path; a blank one is refused (`Path("")` would be the current folder,
    so `--out ""` from an unset shell variable would write a run into wherever the command was started)."""
    if not isinstance(value, (str, Path)) or not str(value).strip():
        raise argparse.ArgumentTypeError(f"must be a file or folder name, got {value!r}")
    return Path(value)


path_arg.checks_values = True  # parse_config applies it to --config values too

positive_int = bounded(int, low=1)
non_negative_int = bounded(int, low=0)
positive_float = bounded(float, low=0, low_open=True)
non_negative_float = bounded(float, low=0)
fraction = bounded(float, 0, 1, low_open=True)  # (0, 1], e.g. --label-fraction
unit_interval = bounded(float, 0, 1)  # [0, 1], e.g. --min-lr-ratio
probability = bounded(float, 0, 1, high_open=True)  # [0, 1), e.g. a dropout rate or an Adam beta


def check_out_dir(path: str | Path, option: str = "--out") -> Path:
    """`path` as a run directory that exists or can be made (nothing is created): UsageError naming `option`
    when it, or the nearest existing folder above it, is not a writable directory."""
    path = Path(path)
    existing = path
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"{option} {path}: {existing} is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"{option} {path}: {existing} is not writable")
    return path


def check_cohort(data: str | Path, split: str) -> None:
    """UsageError naming --data when it is no parsed cohort with recordings in `split` (no folder, no or an
    unreadable splits.json, an empty split), so that a script refuses it before it makes its run folder."""
    from dataset.cohort import resolve_split  # here: it loads pandas and pyarrow, which parsing options needs not

    if not Path(data).is_dir():
        raise UsageError(f"--data {data}: no such folder (run dataset/data_parser.py to make it)")
    try:
        resolve_split(data, split)
    except (OSError, ValueError) as err:
        raise UsageError(f"--data {data}: {err}") from None


def comma_list(text: str) -> list[str]:
    """`"eeg_c4,eeg_c3"` -> `["eeg_c4", "eeg_c3"]` (blank items dropped)."""
    return [item.strip() for item in text.split(",") if item.strip()]


class KeyValueAction(argparse.Action):
    """`--model-arg KEY=VALUE` (repeatable) into a dict; VALUE is read as YAML (`0.7`, `true`, `[1024, 512]`).

    Entries update the dict already in the namespace, so a config file's dict and command-line entries merge
    (the command line wins per key).
    """

    def __call__(self, parser, namespace, values, option_string=None):
        key, sep, raw = str(values).partition("=")
        if not sep or not key.strip():
            parser.error(f"{option_string}: expected KEY=VALUE, got {values!r}")
        items = dict(getattr(namespace, self.dest) or {})
        try:
            items[key.strip()] = yaml.safe_load(raw)
        except yaml.YAMLError as err:
            parser.error(f"{option_string} {values}: the value is no YAML ({one_line(err)})")
        setattr(namespace, self.dest, items)


def build_parser(
    description: str | None = None,
    defaults: Mapping[str, Any] | None = None,
    add_options: Iterable[Callable[[argparse.ArgumentParser], Any]] = (),
    prog: str | None = None,
) -> argparse.ArgumentParser:
    """The shared training parser.

    `add_options` are functions that add a script's own option groups (e.g. `knn_probe.add_knn_args`);
    `defaults` (dest names, e.g. `{"channels": [...], "out": "runs/x"}`) are the script's own defaults and
    may name those options too. `prog`: the command the usage line names (`script_prog(__file__)`).
    """
    from models.loading import MODEL_PRESETS  # here: modules that only need the validators stay free of torch

    parser = ArgumentParser(prog=prog, description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    mark_required(parser, "data")
    parser.add_argument(
        "--config",
        type=path_arg,
        default=None,
        help="JSON or YAML file of options (keys as in config.json); its values become defaults, explicit flags win; "
        "an unknown key or a bad value is an error",
    )

    data = parser.add_argument_group("data")
    data.add_argument(
        "--data", type=path_arg, default=None, help="parsed cohort folder (data_parser's DST; holds splits.json)"
    )
    data.add_argument("--channels", type=comma_list, default=None, help="comma-separated canonical channel names")
    data.add_argument(
        "--workers", type=non_negative_int, default=2, help="DataLoader worker processes per training process"
    )

    model = parser.add_argument_group("model")
    model.add_argument("--preset", default="B", help=f"model size preset ({', '.join(MODEL_PRESETS)})")
    model.add_argument(
        "--model-arg",
        dest="model_args",
        action=KeyValueAction,
        default={},
        metavar="KEY=VALUE",
        help="override one field of the preset's model config (repeatable), e.g. --model-arg mask_ratio=0.75",
    )
    model.add_argument(
        "--debias-batchnorm",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="bias-corrected BatchNorm running statistics while training (utils/batchnorm.py): the eval-mode "
        "statistics are the plain mean of the first 1/momentum batches instead of a pull towards mean 0, "
        "variance 1, so a model trained for a few steps is usable in eval mode; --no-debias-batchnorm "
        "keeps PyTorch's exponential average from the start",
    )

    optim = parser.add_argument_group("optimisation")
    optim.add_argument(
        "--passes",
        "--epochs",
        dest="passes",
        type=positive_int,
        default=30,
        help="passes over the training set (defines the lr schedule; a 30-s epoch is one sample). "
        "--epochs: the old name, still accepted",
    )
    optim.add_argument(
        "--max-steps",
        type=non_negative_int,
        default=0,
        help="stop after this many optimizer steps in total (smoke runs; 0 = no cap). The lr schedule still "
        "spans --passes, so a capped run can be resumed with a larger cap",
    )
    optim.add_argument("--batch-size", type=positive_int, default=256, help="samples per process per micro-batch")
    optim.add_argument("--accum-steps", type=positive_int, default=1, help="micro-batches per optimizer step")
    optim.add_argument(
        "--base-lr",
        "--lr",
        dest="base_lr",
        type=positive_float,
        default=5e-4,
        help="base learning rate of the linear scaling rule: AdamW lr = base_lr x effective_batch / 256, "
        "effective_batch = batch_size x accum_steps x processes (config.json records the AdamW lr under "
        "_derived.lr_scaled). --lr: the old name, still accepted",
    )
    optim.add_argument(
        "--min-lr-ratio", type=unit_interval, default=0.0, help="cosine floor as a fraction of the peak lr"
    )
    optim.add_argument(
        "--weight-decay", type=non_negative_float, default=0.05, help="AdamW decay (not on biases, norms, tokens)"
    )
    optim.add_argument(
        "--adam-betas",
        type=probability,
        nargs=2,
        default=[0.9, 0.999],
        metavar=("BETA1", "BETA2"),
        help="AdamW moment decay rates (first and second moment)",
    )
    optim.add_argument(
        "--warmup-passes",
        "--warmup-epochs",
        dest="warmup_passes",
        type=non_negative_float,
        default=1.0,
        help="linear warmup length in passes over the training set (fractions allowed). "
        "--warmup-epochs: the old name, still accepted",
    )
    optim.add_argument(
        "--warmup-steps",
        type=non_negative_int,
        default=None,
        help="linear warmup in optimizer steps (overrides --warmup-passes)",
    )
    optim.add_argument(
        "--clip-grad", type=non_negative_float, default=3.0, help="max global gradient norm (0 = no clipping)"
    )

    run = parser.add_argument_group("run")
    run.add_argument(
        "--out",
        type=path_arg,
        default=Path("runs/train"),
        help=f"run directory (config, logs, checkpoints); {CONFIG_HISTORY_HELP}",
    )
    run.add_argument(
        "--seed",
        type=non_negative_int,
        default=0,
        help="seeds the model initialisation, the batch order, masking and dropout, and the label "
        "draws (the same seed gives the same numbers at the same step budget)",
    )
    run.add_argument(
        "--resume",
        default="auto",
        help="'auto' continues from OUT/last.pt when it exists; a checkpoint path continues from that file; "
        "'none' starts afresh (overwriting OUT's logs and checkpoints). An unreadable checkpoint is an error "
        "(nothing is written): pass --resume none, or another checkpoint such as OUT/best.pt",
    )
    run.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    run.add_argument("--amp", action="store_true", help="mixed precision autocast on CUDA (on CPU only with --amp-cpu)")
    run.add_argument(
        "--amp-dtype", choices=("bf16", "fp16"), default="bf16", help="autocast dtype (fp16 uses loss scaling)"
    )
    run.add_argument(
        "--amp-cpu",
        action="store_true",
        help="with --amp and bf16, also autocast on CPU: about 1.6-2x per NeuroNet-B step on a CPU with "
        "AVX512-BF16, no gain for tiny or fast (benchmarks/bench_train_step.py)",
    )
    run.add_argument(
        "--max-minutes",
        type=non_negative_float,
        default=0.0,
        help="stop cleanly (checkpoint saved) after this wall time; 0 = no limit",
    )
    run.add_argument(
        "--save-every-steps",
        type=non_negative_int,
        default=0,
        help="also write last.pt every N optimizer steps (0 = per epoch only)",
    )
    run.add_argument(
        "--log-every",
        type=non_negative_int,
        default=50,
        help="optimizer steps between lines in steps.jsonl (and TensorBoard)",
    )
    run.add_argument(
        "--tensorboard", action="store_true", help="also log to OUT/tensorboard (needs the tensorboard package)"
    )
    run.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="tqdm progress bar")

    dist = parser.add_argument_group("distributed (launch with torchrun; single process without it)")
    dist.add_argument(
        "--dist-backend", choices=("auto", "nccl", "gloo"), default="auto", help="auto: nccl on CUDA, gloo on CPU"
    )
    dist.add_argument("--dist-timeout-min", type=positive_float, default=30.0, help="collective timeout in minutes")
    dist.add_argument(
        "--find-unused-parameters",
        action="store_true",
        help="DistributedDataParallel option for models whose forward leaves some trainable parameters unused",
    )
    for add in add_options:
        add(parser)
    if defaults:  # a None default: the script derives the value itself (e.g. --out from the task and fraction)
        unset = {key: None for key, value in defaults.items() if value is None}
        values = {key: value for key, value in defaults.items() if value is not None}
        parser.set_defaults(**check_keys(parser, values, "build_parser(defaults=...)"), **unset)
    return parser


def parse_config(
    parser: argparse.ArgumentParser,
    argv: Iterable[str] | None = None,
    required: Iterable[str] = ("data",),
) -> Config:
    """Parse `argv` with config-file support: file values become defaults, explicit flags win. Returns the
    options as a frozen `Config` (a script resolves what follows from them with `cfg.replace`).

    `required` options must be set by the file or the command line (argparse's own `required=` cannot see
    file values). Raises SystemExit with a usage message on bad input, like argparse.
    """
    argv = list(argv) if argv is not None else None
    pre = ArgumentParser(add_help=False)
    pre.add_argument("--config", type=Path, default=None)
    known, _ = pre.parse_known_args(argv)
    if known.config is not None:
        try:
            values = load_config_file(known.config)
            values = check_keys(parser, values, str(known.config))
        except (OSError, ValueError) as err:
            parser.error(str(err))
        parser.set_defaults(**values)
    values = vars(parser.parse_args(argv))
    for name in required:
        if values.get(name) in (None, ""):
            parser.error(f"--{name.replace('_', '-')} is required (on the command line or in --config)")
    for name in ("data", "out", "config"):  # file values arrive as str; keep paths typed
        if isinstance(values.get(name), str):
            values[name] = Path(values[name])
    for action in parser._actions:  # lists from a file (nargs options) skip argparse's type conversion
        value = values.get(action.dest)
        if action.type is Path and isinstance(value, list):
            values[action.dest] = [Path(v) if isinstance(v, str) else v for v in value]
    return Config(values)


def config_to_dict(cfg: Config | argparse.Namespace | Mapping[str, Any]) -> dict[str, Any]:
    """Plain JSON-safe dict of a config (Paths -> str, tuples -> lists)."""
    items = dict(vars(cfg)) if isinstance(cfg, (Config, argparse.Namespace)) else dict(cfg)
    return {key: to_plain(value) for key, value in items.items()}


def to_plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [to_plain(item) for item in value]
    if isinstance(value, dict):
        return {str(key): to_plain(item) for key, item in value.items()}
    return value


UNRECORDED_DIFFERENCES = ("progress", "out")  # how a run was shown, where its folder is: no reason to keep it
FRESH_START = ("", "none", "no", "false")  # --resume values that start afresh
UNRECORDED_RESUMES = ("auto", *FRESH_START)  # how a run started; a checkpoint path is recorded


def save_config(
    cfg: Config | argparse.Namespace,
    path: str | Path,
    derived: Mapping[str, Any] | None = None,
    keep_previous: bool = False,
) -> Path:
    """Write the resolved config as JSON (atomic); `derived` values (world size, effective lr, ...) go under
    `_derived` for the record. With `keep_previous`, an existing file whose options differ is first renamed to
    `config.<n>.json` (the next free n, `keep_config_history`), so a run directory keeps the config of every run
    that started there."""
    record = config_to_dict(cfg)
    if derived:
        record[DERIVED_KEY] = to_plain(dict(derived))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(record, indent=2, sort_keys=True) + "\n"
    if keep_previous:
        keep_config_history(path, json.loads(text))
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path


def keep_config_history(path: Path, record: Mapping[str, Any]) -> None:
    """Before `record` is written as `path` (a run's config.json): an existing file whose options differ (or that
    cannot be read) is renamed to `config.<n>.json`, the next free n; a difference in `--no-progress` or `--out`
    alone, or between `--resume auto` and `none`, keeps no entry (a `--resume` path, where the weights came from,
    does)."""
    if not path.is_file():
        return
    try:
        previous = json.loads(path.read_text())
    except (OSError, ValueError):
        previous = None  # unreadable: kept as history all the same

    def recorded(options: Mapping[str, Any]) -> dict:  # the options a history entry is kept for
        kept = {k: v for k, v in options.items() if k not in (DERIVED_KEY, *UNRECORDED_DIFFERENCES)}
        if str(kept.get("resume", "")).lower() in UNRECORDED_RESUMES:
            kept.pop("resume", None)
        return kept

    if not isinstance(previous, dict) or recorded(previous) != recorded(record):
        os.replace(path, next_history_name(path))


def next_history_name(path: Path) -> Path:
    """`config.<n>.json` beside `path` (config.json) for the first n not taken."""
    n = 1
    while path.with_name(f"{path.stem}.{n}{path.suffix}").exists():
        n += 1
    return path.with_name(f"{path.stem}.{n}{path.suffix}")


def config_differences(saved: Any, current: Any, limit: int = 3, what: str = "model") -> str:
    """'<what> differs: key: saved -> current; ...' for the first `limit` differing leaves of two nested configs
    (a key missing on one side reads "(none)"); "" when either is not a dict or nothing differs."""
    if not isinstance(saved, Mapping) or not isinstance(current, Mapping):
        return ""

    def leaves(value: Any, prefix: str = "") -> dict[str, Any]:
        if not isinstance(value, Mapping):
            return {prefix: value}
        return {k: v for key, item in value.items() for k, v in leaves(item, f"{prefix}{key}.").items()}

    old, new = leaves(saved), leaves(current)
    keys = [k for k in sorted(set(old) | set(new)) if to_plain(old.get(k)) != to_plain(new.get(k))]
    if not keys:
        return ""
    shown = "; ".join(f"{k.rstrip('.')}: {old.get(k, '(none)')} -> {new.get(k, '(none)')}" for k in keys[:limit])
    return f"{what} differs: {shown}" + (f"; {len(keys) - limit} more" if len(keys) > limit else "")
