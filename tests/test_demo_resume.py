"""The demo skips a pretraining stage on a rerun only when that run completed its budget: `last.pt` is also
written after every pass and by a run cut short, which the rerun must continue instead. Its downstream runs go
side by side, one thread each, and one failure stops them all."""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _demo():
    spec = importlib.util.spec_from_file_location("demo_script", REPO / "demo.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _log(run: Path, *records: dict) -> None:
    run.mkdir(parents=True, exist_ok=True)
    (run / "last.pt").write_bytes(b"checkpoint")
    (run / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def test_only_a_completed_pretraining_run_counts_as_done(tmp_path):
    completed = _demo()._completed
    assert completed(tmp_path / "missing") is None
    _log(tmp_path / "cut", {"kind": "epoch", "epoch": 1})  # killed in its second pass: no summary yet
    assert completed(tmp_path / "cut") is None
    _log(tmp_path / "capped", {"kind": "epoch", "epoch": 1}, {"kind": "summary", "stopped": "max_steps"})
    assert completed(tmp_path / "capped") is None
    resumed = ({"kind": "summary", "stopped": "max_steps"}, {"kind": "summary", "stopped": "completed"})
    _log(tmp_path / "resumed", *resumed)
    assert completed(tmp_path / "resumed") == tmp_path / "resumed" / "log.jsonl"


def _script(folder: Path, name: str, body: str) -> str:
    path = folder / name
    path.write_text("import os, sys, time\n" + body + "\n")
    return str(path)


def test_downstream_runs_go_side_by_side_with_one_thread_each(tmp_path, capsys, monkeypatch):
    """--jobs 2: two runs at a time, each limited to one thread, each with its own log; a run whose output exists
    is skipped."""
    demo = _demo()
    for name in demo.THREAD_VARIABLES:
        monkeypatch.setenv(name, "4")  # what the runs would inherit without the limit
    marks = tmp_path / "marks"
    marks.mkdir()
    body = (
        "open(os.path.join(sys.argv[1], sys.argv[2] + '.start'), 'w').close()\n"
        "deadline = time.time() + 20\n"
        "while len(os.listdir(sys.argv[1])) < 2 and time.time() < deadline:  # waits for its neighbour to start\n"
        "    time.sleep(0.05)\n"
        "threads = {os.environ.get(k) for k in ('OMP_NUM_THREADS', 'MKL_NUM_THREADS', 'OPENBLAS_NUM_THREADS')}\n"
        "print('threads', *threads, 'starts seen', len(os.listdir(sys.argv[1])))"
    )
    script = _script(tmp_path, "run.py", body)
    (tmp_path / "finished").write_text("")
    jobs = [demo.Job(name, script, (marks, name), tmp_path / name) for name in ("first", "second")]
    jobs.append(demo.Job("third", script, (marks, "third"), tmp_path / "finished"))
    demo._run_jobs(jobs, tmp_path / "logs", 2)
    for name in ("first", "second"):
        assert (tmp_path / "logs" / f"{name}.log").read_text().strip() == "threads 1 starts seen 2"
    assert not (tmp_path / "logs" / "third.log").exists() and "[skip]" in capsys.readouterr().out


def test_a_failed_downstream_run_stops_the_demo_and_the_runs_beside_it(tmp_path, capsys):
    demo = _demo()
    slow = _script(tmp_path, "slow.py", "time.sleep(60)")
    failing = _script(tmp_path, "failing.py", "time.sleep(0.5)\nsys.exit('error: --data: not a parsed cohort')")
    jobs = [demo.Job("slow", slow, (), tmp_path / "a"), demo.Job("failing", failing, (), tmp_path / "b")]
    jobs.append(demo.Job("never", slow, (), tmp_path / "c"))
    started = time.monotonic()
    with pytest.raises(SystemExit, match=r"failing\.py exited with code 1; its log: .*failing\.log"):
        demo._run_jobs(jobs, tmp_path / "logs", 2)
    assert time.monotonic() - started < 30  # the slow run beside it was stopped, not waited for
    assert "error: --data: not a parsed cohort" in capsys.readouterr().out
    assert not (tmp_path / "logs" / "never.log").exists()


def test_a_folder_of_another_recipe_is_refused_before_any_work(tmp_path, capsys):
    """A rerun skips finished stages: in a folder made with other budgets or masking it would report those runs
    under this recipe's name, so such a folder is refused, and so is one of a demo that recorded no recipe."""
    demo = _demo()
    out = tmp_path / "demo_out"
    wanted = demo.recipe(demo.argparse.Namespace(nights=16, hours=2.0, seed=0))
    assert demo.check_recipe(out, wanted) == "" and json.loads((out / "recipe.json").read_text()) == wanted
    assert demo.check_recipe(out, wanted) == ""  # the same recipe goes on
    older = dict(wanted, mask_mode="independent")
    (out / "recipe.json").write_text(json.dumps(older))
    assert demo.main(["--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "made with another recipe (mask_mode: independent -> channel)" in err and err.count("\n") == 1
    assert sorted(p.name for p in out.iterdir()) == ["recipe.json"]  # nothing generated
    (out / "recipe.json").unlink()
    (out / "runs").mkdir()
    assert "earlier version of the demo" in demo.check_recipe(out, wanted)


def test_each_probe_gets_the_head_its_recipe_names(tmp_path):
    """The staging probe at 5 % labels is fitted (`--head logistic`, no passes); every other probe trains its MLP
    head for the demo's passes; the recipe names the fitted ones."""
    demo = _demo()
    jobs = demo.downstream_jobs(tmp_path, tmp_path / "mm", tmp_path / "ds", tmp_path / "ev", tmp_path / "c", 0)
    probes = {job.name: [str(a) for a in job.args] for job in jobs if job.name.startswith("probe-")}
    assert set(probes) == {f"probe-{t}-lf{f:g}" for t in demo.TASKS for f in demo.FRACTIONS}
    for name, args in probes.items():
        fitted = name == "probe-sleep_stage-lf0.05"
        assert args[args.index("--head") + 1] == "logistic" if fitted else "--head" not in args, name
        assert ("--passes" in args) is not fitted, name
    recipe = demo.recipe(demo.argparse.Namespace(nights=16, hours=2.0, seed=0))
    assert recipe["probe_head"] == {"sleep_stage-lf0.05": "logistic"}
