"""Command-line configuration shared by every train.py (DESIGN.md section 4).

One parser with five option groups (data, model, optimisation, run, distributed). A script states its own defaults
(`build_parser(defaults={...})`), may add options of its own, and parses with `parse_config`, which applies the
precedence

    parser defaults  <  script defaults  <  --config FILE (JSON or YAML)  <  explicit command-line flags

The resolved configuration is saved beside the outputs (`save_config`) and can be passed back as `--config` to
rerun the same job.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import yaml

# Keys written into config.json for the record that are not options (ignored when the file is read back).
DERIVED_KEY = "_derived"
MODEL_PRESETS = ("tiny", "T", "B")


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
        items[key.strip()] = yaml.safe_load(raw)
        setattr(namespace, self.dest, items)


def build_parser(
    description: str | None = None,
    defaults: Mapping[str, Any] | None = None,
    add_options: Iterable[Callable[[argparse.ArgumentParser], Any]] = (),
) -> argparse.ArgumentParser:
    """The shared training parser.

    `add_options` are functions that add a script's own option groups (e.g. `knn_probe.add_knn_args`);
    `defaults` (dest names, e.g. `{"channels": [...], "out": "runs/x"}`) are the script's own defaults and
    may name those options too.
    """
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument(
        "--config", type=Path, default=None,
        help="JSON or YAML file of options (keys as in config.json); its values become defaults, explicit flags win",
    )

    data = parser.add_argument_group("data")
    data.add_argument("--data", type=Path, default=None,
                      help="parsed cohort folder (data_parser's DST; holds splits.json)")
    data.add_argument("--channels", type=comma_list, default=None, help="comma-separated canonical channel names")
    data.add_argument("--workers", type=int, default=2, help="DataLoader worker processes per training process")

    model = parser.add_argument_group("model")
    model.add_argument("--preset", default="B", help=f"model size preset ({', '.join(MODEL_PRESETS)})")
    model.add_argument(
        "--model-arg", dest="model_args", action=KeyValueAction, default={}, metavar="KEY=VALUE",
        help="override one field of the preset's model config (repeatable), e.g. --model-arg mask_ratio=0.75",
    )

    optim = parser.add_argument_group("optimisation")
    optim.add_argument("--epochs", type=int, default=30, help="passes over the training set (defines the lr schedule)")
    optim.add_argument(
        "--max-steps", type=int, default=0,
        help="stop after this many optimizer steps in total (smoke runs; 0 = no cap). The lr schedule still "
             "spans --epochs, so a capped run can be resumed with a larger cap",
    )
    optim.add_argument("--batch-size", type=int, default=256, help="samples per process per micro-batch")
    optim.add_argument("--accum-steps", type=int, default=1, help="micro-batches per optimizer step")
    optim.add_argument(
        "--lr", type=float, default=5e-4,
        help="base learning rate; the AdamW rate is lr x effective_batch / 256 with effective_batch = "
             "batch_size x accum_steps x world_size",
    )
    optim.add_argument("--min-lr-ratio", type=float, default=0.0, help="cosine floor as a fraction of the peak lr")
    optim.add_argument("--weight-decay", type=float, default=0.05, help="AdamW decay (not on biases, norms, tokens)")
    optim.add_argument("--adam-betas", type=float, nargs=2, default=[0.9, 0.999], metavar=("BETA1", "BETA2"))
    optim.add_argument("--warmup-epochs", type=float, default=1.0, help="linear warmup length in epochs")
    optim.add_argument("--warmup-steps", type=int, default=None,
                       help="linear warmup in optimizer steps (overrides --warmup-epochs)")
    optim.add_argument("--clip-grad", type=float, default=3.0, help="max global gradient norm (0 = no clipping)")

    run = parser.add_argument_group("run")
    run.add_argument("--out", type=Path, default=Path("runs/train"), help="run directory (config, logs, checkpoints)")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument(
        "--resume", default="auto",
        help="'auto' continues from OUT/last.pt when it exists; a checkpoint path continues from that file; "
             "'none' starts afresh (overwriting OUT's logs)",
    )
    run.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    run.add_argument("--amp", action="store_true", help="mixed precision autocast on CUDA (never on CPU)")
    run.add_argument("--amp-dtype", choices=("bf16", "fp16"), default="bf16",
                     help="autocast dtype (fp16 uses loss scaling)")
    run.add_argument("--max-minutes", type=float, default=0.0,
                     help="stop cleanly (checkpoint saved) after this wall time; 0 = no limit")
    run.add_argument("--save-every-steps", type=int, default=0,
                     help="also write last.pt every N optimizer steps (0 = per epoch only)")
    run.add_argument("--log-every", type=int, default=50,
                     help="optimizer steps between lines in steps.jsonl (and TensorBoard)")
    run.add_argument("--tensorboard", action="store_true",
                     help="also log to OUT/tensorboard (needs the tensorboard package)")
    run.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="tqdm progress bar")

    dist = parser.add_argument_group("distributed (launch with torchrun; single process without it)")
    dist.add_argument("--dist-backend", choices=("auto", "nccl", "gloo"), default="auto",
                      help="auto: nccl on CUDA, gloo on CPU")
    dist.add_argument("--dist-timeout-min", type=float, default=30.0, help="collective timeout in minutes")
    dist.add_argument(
        "--find-unused-parameters", action="store_true",
        help="DistributedDataParallel option for models whose forward leaves some trainable parameters unused",
    )
    for add in add_options:
        add(parser)
    if defaults:
        _check_keys(parser, defaults, "build_parser(defaults=...)")
        parser.set_defaults(**dict(defaults))
    return parser


def _option_dests(parser: argparse.ArgumentParser) -> set[str]:
    return {action.dest for action in parser._actions if action.dest != argparse.SUPPRESS}


def _check_keys(parser: argparse.ArgumentParser, values: Mapping[str, Any], where: str) -> None:
    """Unknown names and wrongly typed values are errors (strings are converted by argparse itself)."""
    unknown = sorted(set(values) - _option_dests(parser))
    if unknown:
        known = ", ".join(sorted(_option_dests(parser) - {"help"}))
        raise ValueError(f"{where}: unknown option(s) {', '.join(unknown)}; known options: {known}")
    flags = (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse.BooleanOptionalAction)
    for action in parser._actions:
        if action.dest not in values or values[action.dest] is None:
            continue
        value = values[action.dest]
        if isinstance(action, flags):
            expected = bool
        elif action.type in (int, float) and action.nargs is None and not isinstance(value, str):
            expected = int if action.type is int else (int, float)
        else:
            continue
        if not isinstance(value, expected) or (expected is not bool and isinstance(value, bool)):
            kind = {bool: "true/false", int: "an integer"}.get(expected, "a number")
            raise ValueError(f"{where}: option {action.dest} = {value!r} should be {kind}")


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a JSON (.json) or YAML (.yaml/.yml, or anything else) mapping of option names to values.

    Keys may use dashes or underscores (`batch-size` or `batch_size`). The `config` key and the `_derived`
    record of a saved config.json are ignored, so a run's config.json can be passed back as `--config`.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: config file not found")
    text = path.read_text()
    try:
        values = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        raise ValueError(f"{path}: cannot parse config file ({err})") from err
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ValueError(f"{path}: a config file must hold a mapping of option names to values, "
                         f"got {type(values).__name__}")
    values = {str(key).replace("-", "_"): value for key, value in values.items()}
    values.pop("config", None)
    values.pop(DERIVED_KEY, None)
    return values


def parse_config(
    parser: argparse.ArgumentParser,
    argv: Iterable[str] | None = None,
    required: Iterable[str] = ("data",),
) -> argparse.Namespace:
    """Parse `argv` with config-file support: file values become defaults, explicit flags win.

    `required` options must be set by the file or the command line (argparse's own `required=` cannot see
    file values). Raises SystemExit with a usage message on bad input, like argparse.
    """
    argv = list(argv) if argv is not None else None
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", type=Path, default=None)
    known, _ = pre.parse_known_args(argv)
    if known.config is not None:
        try:
            values = load_config_file(known.config)
            _check_keys(parser, values, str(known.config))
        except (OSError, ValueError) as err:
            parser.error(str(err))
        parser.set_defaults(**values)
    cfg = parser.parse_args(argv)
    for name in required:
        if getattr(cfg, name, None) in (None, ""):
            parser.error(f"--{name.replace('_', '-')} is required (on the command line or in --config)")
    for name in ("data", "out", "config"):  # file values arrive as str; keep paths typed
        if isinstance(getattr(cfg, name, None), str):
            setattr(cfg, name, Path(getattr(cfg, name)))
    for action in parser._actions:  # lists from a file (nargs options) skip argparse's type conversion
        value = getattr(cfg, action.dest, None)
        if action.type is Path and isinstance(value, list):
            setattr(cfg, action.dest, [Path(v) if isinstance(v, str) else v for v in value])
    return cfg


def config_to_dict(cfg: argparse.Namespace | Mapping[str, Any]) -> dict[str, Any]:
    """Plain JSON-safe dict of a config (Paths -> str, tuples -> lists)."""
    items = vars(cfg) if isinstance(cfg, argparse.Namespace) else dict(cfg)
    return {key: to_plain(value) for key, value in items.items()}


def to_plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [to_plain(item) for item in value]
    if isinstance(value, dict):
        return {str(key): to_plain(item) for key, item in value.items()}
    return value


def save_config(cfg: argparse.Namespace, path: str | Path, derived: Mapping[str, Any] | None = None) -> Path:
    """Write the resolved config as JSON (atomic); `derived` values (world size, effective lr, ...) go under
    `_derived` for the record."""
    record = config_to_dict(cfg)
    if derived:
        record[DERIVED_KEY] = to_plain(dict(derived))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
    return path
