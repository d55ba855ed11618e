"""What a training run may resume, checked before any work (docs/training.md §4): `--resume` resolved to a
checkpoint, read, and refused with one UsageError when it belongs to another run; and what an earlier run in
the same folder leaves behind when training starts again.

A run that does not go on from its own --out (a fresh start, or another folder's checkpoint) while that folder
holds an earlier run trains in OUT/.next (`training_folder`): the earlier run stays whole, in place, until the new
one finishes and `publish_run` moves it in; a failed or killed run leaves OUT as it was, `--resume auto` goes on
in OUT/.next, and a publish cut short is finished by the next command in OUT. A resumed checkpoint's best.pt
comes along when it is resumed into another folder (`carried_best`). The folder is locked while a run trains
there (`lock_run_folder`).

A checkpoint belongs to another run when it trained another model kind, on other data or another split of it,
with other labels, another backbone, other class weights, another head or first phase of fine-tuning
(`RESUME_IDENTITY_KEYS`, compared by value; the split by the content of
splits.json), selected its best checkpoint by another val metric, probe target or val subset (a pretraining
script also refuses a checkpoint of another modality), or stepped with another
effective batch (its steps per pass and lr schedule would no longer match the position it resumes at). Other
changed options (all but `RUNTIME_KEYS`, how a run is carried out) are resumed with a warning, the new lr and
weight decay applying from the resumed step on, unless the run is finished under the new budget
(`utils.engine.Trainer.resume` refuses that: nothing would be trained under the options its record would name).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from dataset.atomic_files import write_atomic
from models.loading import PUBLISHING, REPLACEMENT  # the replacement folder; its list of what goes (JSON)
from utils.checkpoint import load_checkpoint, sha256_file
from utils.config import FRESH_START, UsageError, keep_config_history, next_history_name, to_plain
from utils.config_file import LEGACY_KEYS
from utils.interrupt import signals_deferred
from utils.run_logging import LOG_NAMES

# what a run learns from and is selected by: a checkpoint trained with other values is another run, never resumed
RESUME_IDENTITY_KEYS = (
    "data",
    "task",
    "label_fraction",
    "train_subjects",
    "label_rule",
    "backbone",
    "init",
    "pooling",
    "select_metric",
    "max_val_recordings",
    "monitor_target",
    "monitor_metric",
    # what the loss weighs and the head is: a resume with others would train one model under two sets of them
    "class_weights",
    "head_hidden",
    "head_dropout",
    # fine-tuning's first phase, which a resumed second phase does not train again: its record must stay true
    "context_passes",
    "context_base_lr",
    "context_batch_size",
    "context_direction",
    "context_norm",
)
BATCH_KEYS = ("batch_size", "accum_steps")  # their product is the effective batch of one process
# how a run is carried out, not what it trains: any other option changed over a finished run is refused (nothing
# would be trained under it, yet config.json would name it), and over an unfinished one warned about. Some move
# the numbers at float rounding only: another device, batch size for evaluation, or --cache-dir (its vectors are
# encoded in other batches than without it, equal to about 1e-6)
RUNTIME_KEYS = (
    "out",
    "resume",
    "config",
    "progress",
    "workers",
    "device",
    "log_every",
    "tensorboard",
    "save_every_steps",
    "eval_batch_size",
    "dist_backend",
    "dist_timeout_min",
    "find_unused_parameters",
    "max_minutes",
    "max_steps",  # compared on its own: a larger cap goes on with a capped run
    "method",
    "cache_dir",
    "hypnograms",
    "unimodal",  # paths, however spelled: the multimodal script compares the encoders by content
)


def resolve_resume(resume: str | None, run_dir: Path) -> Path | None:
    """`auto` -> RUN_DIR/last.pt if present; `none`/empty -> None; otherwise the given path (UsageError if it is
    not a file)."""
    if resume is None or str(resume).lower() in FRESH_START:
        return None
    if str(resume).lower() == "auto":
        last = Path(run_dir) / "last.pt"
        return last if last.is_file() else None
    path = Path(resume)
    if not path.is_file():
        raise UsageError(f"--resume {resume}: no such checkpoint file (--resume none starts afresh)")
    return path


def read_resume_checkpoint(
    resume: str | None,
    run_dir: Path,
    model_kind: str | None = None,
    cfg: Any = None,
    advice: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> tuple[Path | None, dict[str, Any] | None]:
    """The training checkpoint `--resume` points at (`resolve_resume`), read and checked, or (None, None) for a
    fresh start. UsageError naming the file and what to do when it cannot be read (truncated, corrupt, not a
    checkpoint), holds another `model_kind` than this run trains, or (with `cfg`) belongs to another run (module
    docstring). Scripts call it before reading any data, so a bad checkpoint changes nothing; `fit` calls it to
    resume. `advice`: what to do about an unreadable checkpoint or one of another kind, where the default advice
    does not apply (a phase of a run, whose own checkpoint no --resume names). `metadata`: values the
    checkpoint's metadata must hold where it records them (e.g. {"modality": "eeg"}: one NeuroNet kind serves
    every modality)."""
    path = resolve_resume(resume, run_dir)
    if path is None:
        return None, None
    if advice is None and str(resume).lower() == "auto":
        best = Path(run_dir) / "best.pt"
        advice = "it is the automatic resume from --out: start afresh with --resume none" + (
            f", or continue from the best checkpoint with --resume {best}" if best.is_file() else ""
        )
    elif advice is None:
        advice = "give --resume another checkpoint, or --resume none to start afresh"
    try:
        state = load_checkpoint(path)
    except (OSError, ValueError) as err:
        raise UsageError(f"{err}; {advice}") from None
    if model_kind is not None and state["model_kind"] != model_kind:
        raise UsageError(f"{path}: holds a {state['model_kind']!r} model, this run trains {model_kind!r}; {advice}")
    recorded = state.get("metadata") or {}
    for key, wanted in (metadata or {}).items():
        if recorded.get(key, wanted) != wanted:
            raise UsageError(f"{path}: holds a model of {key} {recorded[key]!r}, this run trains {wanted!r}; {advice}")
    if cfg is None:
        return path, state
    saved = {LEGACY_KEYS.get(k, k): v for k, v in (state.get("config") or {}).items()}
    # another run's checkpoint: its best.pt is that run's too, and a fresh start here would remove its results
    advice = f"give this run another --out (or --resume none to replace the run in {run_folder(run_dir)})"
    for k in RESUME_IDENTITY_KEYS:
        old, new = saved.get(k), to_plain(getattr(cfg, k, None))
        paths = k in ("data", "backbone") and old is not None and new is not None  # compared as files
        if k in saved and hasattr(cfg, k) and (Path(old).resolve() != Path(new).resolve() if paths else old != new):
            raise UsageError(f"{path}: trained with other options than this run ({k} {old!r} -> {new!r}); {advice}")
    splits = Path(getattr(cfg, "data", None) or "") / "splits.json"
    if state.get("splits_sha256") and getattr(cfg, "data", None) and splits.is_file():
        if sha256_file(splits) != state["splits_sha256"]:
            raise UsageError(
                f"{path}: trained on another split of {cfg.data} (its splits.json changed since): the subjects "
                f"it trained on may now be val or test; {advice}"
            )
    return path, state


def check_resumed_batch(path: Path, saved: dict[str, Any], cfg: Any) -> None:
    """UsageError when the checkpoint at `path` (its config `saved`) stepped with another batch size or
    accumulation than `cfg`, the options as training uses them: steps per pass and the lr schedule would no
    longer fit the step it resumes at, and a resumed pass would skip another number of samples."""
    if not all(k in saved and hasattr(cfg, k) for k in BATCH_KEYS):
        return
    old, new = [int(saved[k]) for k in BATCH_KEYS], [int(getattr(cfg, k)) for k in BATCH_KEYS]
    if old != new:
        raise UsageError(
            f"{path}: trained with batch size {old[0]} x {old[1]} accumulation steps, this run {new[0]} x "
            f"{new[1]}: its steps per pass and lr schedule would no longer fit the step it resumes at; resume "
            f"with --batch-size {old[0]} --accum-steps {old[1]}, or start afresh with --resume none"
        )


def check_resumed_backbone(path: Path, state: dict[str, Any], sha256: str | None) -> None:
    """UsageError when the downstream checkpoint at `path` was trained on the vectors of another backbone file
    content than `sha256` (a pretraining run at the same path that went on since)."""
    trained = ((state.get("metadata") or {}).get("backbone") or {}).get("sha256")
    if trained and sha256 and trained != sha256:
        raise UsageError(
            f"{path}: trained on another backbone (sha256 {trained[:12]}…, now {sha256[:12]}…: the file changed "
            "since); give another --out, or --resume none to start afresh"
        )


def result_files(run_dir: Path) -> list[str]:
    """Names of the files an earlier finish left in `run_dir` as its results: those its metrics.json lists under
    "outputs" (predictions, tables, figures), plain files of this folder only."""
    try:
        outputs = dict(json.loads((Path(run_dir) / "metrics.json").read_text()).get("outputs") or {})
    except (OSError, ValueError, TypeError, AttributeError):
        return []
    return [str(n) for n in outputs.values() if (Path(run_dir) / str(n)).parent == Path(run_dir)]


def clear_run_results(run_dir: Path, checkpoints: bool) -> None:
    """Before training changes a run's model: remove what its folder holds as results of an earlier finish
    (metrics.json and the files it lists under "outputs": predictions, tables, figures), so no report of one
    model stays beside another's checkpoints; with `checkpoints` (a fresh start) also best.pt and last.pt."""
    run_dir = Path(run_dir)
    for name in result_files(run_dir):
        if (run_dir / name).is_file():
            (run_dir / name).unlink()
    names = ("metrics.json", *(("best.pt", "last.pt") if checkpoints else ()))
    for name in names:
        (run_dir / name).unlink(missing_ok=True)


REPLACING = " (replaces the earlier run in the folder above when it finishes; until then that run stays whole)"
RUN_FILES = ("last.pt", "best.pt", "metrics.json")  # what shows that a folder holds a run
PHASE_FOLDERS = ("context_phase",)  # where a phase of a run trains, in its folder (fine-tuning's first phase)
_HELD: dict[str, int] = {}  # folders this process holds the lock of (released when it ends)


def _close_inherited_locks() -> None:
    """In a forked child (a DataLoader worker): close the run-folder locks inherited with the parent's descriptors
    (the lock stays the parent's). Held open there, they kept a folder locked for seconds after the parent was
    killed, and a rerun started at once was refused as "another training run"."""
    for fd in _HELD.values():
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD.clear()


os.register_at_fork(after_in_child=_close_inherited_locks)
_MADE: dict[str, Path] = {}  # of those, the ones it made: folder -> the topmost folder it made for it


def holds_run(folder: Path) -> bool:
    return any((Path(folder) / name).is_file() for name in RUN_FILES)


def training_folder(resume: str | None, out: str | Path) -> Path:
    """The folder a run of `--resume resume --out out` trains in: `out`, or `out/.next` for a fresh start (or one
    from another folder's checkpoint) while `out` holds an earlier run; `--resume auto` goes on in `out/.next`
    when an unfinished replacement saved a checkpoint there (its own last.pt, or a phase's), before the run of
    `out` itself; a `--resume` path in `out` or `out/.next` goes on there. A replacement cut short while it was
    being moved in is moved in first, under the folder's lock (the one thing written here: it finished)."""
    out = Path(out)
    stage = out / REPLACEMENT
    if (stage / PUBLISHING).is_file():
        if os.environ.get("RANK", "0") == "0":  # under torchrun: rank 0 finishes it, the others wait for that
            lock_run_folder(out)  # not while the run that was publishing is still at it
            publish_run(stage)
        while (stage / PUBLISHING).is_file():
            time.sleep(0.2)
    if resume is None or str(resume).lower() in FRESH_START:
        return stage if holds_run(out) else out
    if str(resume).lower() == "auto":
        return stage if resumable(stage) else out
    if inside(resume, stage):
        return stage  # goes on with the replacement
    if inside(resume, out):
        return out  # goes on with the run of this folder
    return stage if holds_run(out) else out  # another folder's checkpoint: a new run of this folder


def inside(path: str | Path, folder: str | Path) -> bool:
    """Whether `path` lies below `folder` (symbolic links resolved: a link to --out is the same folder)."""
    return Path(folder).resolve() in Path(path).resolve().parents


def resumable(stage: Path) -> bool:
    """Whether a replacement folder holds a checkpoint to go on from (a phase's in a subfolder included)."""
    return stage.is_dir() and any(path.is_file() for path in stage.rglob("last.pt"))


def is_replacement(folder: str | Path) -> bool:
    return Path(folder).name == REPLACEMENT


def run_folder(path: str | Path) -> Path:
    """Where `path`, in or below a replacement folder (`training_folder`), is found once the run finished."""
    parts = Path(path).parts
    if REPLACEMENT not in parts:
        return Path(path)
    i = parts.index(REPLACEMENT)
    return Path(*parts[:i], *parts[i + 1 :])


def lock_run_folder(out: str | Path) -> None:
    """Keep other processes out of `out` while this one trains there (main process, when training starts): two
    runs in one folder would remove or mix each other's checkpoints. UsageError when another process holds it."""
    out = Path(out)
    key = str(out.resolve())
    if key in _HELD:  # a later run of this same process
        return
    top = Path(key)  # the topmost folder this call makes (absolute, as the key is)
    while not top.parent.exists() and top.parent != top:
        top = top.parent
    made = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    if made:
        _MADE[key] = top
    fd = os.open(out, os.O_RDONLY)  # the folder itself is locked: no lock file among the run's files
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise UsageError(
            f"--out {out}: another training run is using this folder; wait for it, or give another --out"
        ) from None
    _HELD[key] = fd


def discard_unused_run_folders() -> None:
    """After a run failed (`utils.config.reported_errors`): every run folder this process made and wrote nothing
    into is unlocked and removed, with the folders made above it, so a refused or failed run leaves no trace."""
    for key, top in list(_MADE.items()):
        folder = Path(key)
        try:
            if any(folder.iterdir()):
                continue
        except OSError:
            continue
        os.close(_HELD.pop(key))
        del _MADE[key]
        while folder == top or top in folder.parents:  # never above the folders this process made
            try:
                folder.rmdir()
            except OSError:
                break
            folder = folder.parent


def start_training_folder(resume: str | None, folder: str | Path) -> None:
    """When training starts (`utils.engine.setup_run`, main process): the run's folder is locked
    (`lock_run_folder`), and a replacement folder that this run does not go on from is emptied: what it holds is
    a replacement given up by a later `--resume none`, or by a run in its --out itself (which `--resume auto`
    would otherwise pass over for it)."""
    folder = Path(folder)
    lock_run_folder(run_folder(folder))
    stage = folder if is_replacement(folder) else folder / REPLACEMENT
    if not stage.is_dir() or stage.is_symlink():
        return
    if folder == stage:
        auto = str(resume).lower() == "auto" and resumable(stage)
        resumed = resolve_resume(resume, stage) if not auto else None
        if auto or (resumed is not None and inside(resumed, stage)):
            return
    shutil.rmtree(stage)


def publish_run(folder: str | Path) -> Path:
    """The run trained in `folder` replaces the earlier run of its --out once it finished (main process, after
    every output was written): the earlier run's checkpoints, results and logs go, this run's files move in
    (last.pt last), and the earlier config.json stays as history (`config.<n>.json`) when its options differ.
    What of the earlier run goes is written down first (`PUBLISHING`), so a publish killed half-way is finished by
    the next run in the folder (`training_folder`) without touching a file already moved in. Returns the run's
    folder; a run trained in its --out directly stays where it is."""
    folder = Path(folder)
    if not is_replacement(folder):
        return folder
    with signals_deferred():  # Ctrl-C or SIGTERM wait until the run is in place (a kill is finished later)
        return _publish(folder)


def _publish(folder: Path) -> Path:
    out, marker = folder.parent, folder / PUBLISHING
    if not marker.is_file():
        names = {*RUN_FILES, *LOG_NAMES, *PHASE_FOLDERS, *result_files(out)}
        drop = sorted(n for n in names if (out / n).exists() and not (folder / n).exists())
        write_atomic(marker, lambda tmp: tmp.write_text(json.dumps({"drop": drop})))
    for config in sorted(folder.rglob("config*.json")):  # the options it records: where the run is from now on
        try:
            record = json.loads(config.read_text())
        except (OSError, ValueError):
            continue
        recorded = Path(str(record.get("out", ""))) if isinstance(record, dict) else None
        if recorded is not None and (recorded == folder or folder in recorded.parents):
            record["out"] = str(out / recorded.relative_to(folder))
            text = json.dumps(record, indent=2, sort_keys=True) + "\n"
            write_atomic(config, lambda tmp, text=text: tmp.write_text(text))  # a kill: never a cut config.json
    try:
        keep_config_history(out / "config.json", json.loads((folder / "config.json").read_text()))
    except (OSError, ValueError):  # none, or unreadable: nothing to compare the earlier config.json with
        pass
    history = sorted(folder.glob("config.*.json"), key=lambda p: int(p.stem.partition(".")[2] or 0))
    for earlier in history:  # this run's own history (a resume with other options), after the earlier run's
        os.replace(earlier, next_history_name(out / "config.json"))
    for name in json.loads(marker.read_text())["drop"]:
        earlier = out / name
        if earlier.is_dir() and not earlier.is_symlink():
            shutil.rmtree(earlier)
        else:
            earlier.unlink(missing_ok=True)
    for entry in sorted(folder.iterdir(), key=lambda p: p.name == "last.pt"):
        if entry.name == PUBLISHING:
            continue
        if entry.name.endswith(".tmp"):  # a temp file of a write that was killed: not part of the run
            entry.unlink()
            continue
        target = out / entry.name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(entry, target)
    marker.unlink()
    folder.rmdir()
    return out


def carried_best(path: str | Path, run_dir: str | Path, best: dict[str, Any], copy: bool = True) -> dict[str, Any]:
    """The best-checkpoint record a run resumed from `path` into `run_dir` goes on with. From its own folder: as
    saved. From another folder: that folder's best.pt comes along (copied when `copy`: the main process) when it
    is the one the record names (the same step); otherwise the record is reset, so the next monitored pass is
    saved as best.pt rather than none being saved for a value no file holds."""
    source = Path(path).parent
    if source.resolve() == Path(run_dir).resolve() or best.get("value") is None:
        return best
    try:
        step = load_checkpoint(source / "best.pt").get("step") if (source / "best.pt").is_file() else None
    except ValueError:  # unreadable: as if there were none
        step = None
    if step is None or step != best.get("step"):  # none, or not the one the record names: saved anew
        return {**best, "value": None, "epoch": None, "step": None}
    if copy:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        write_atomic(Path(run_dir) / "best.pt", lambda tmp: shutil.copyfile(source / "best.pt", tmp))
    return best
