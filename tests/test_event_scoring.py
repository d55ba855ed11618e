"""benchmarks/event_scoring.py's command line: options forwarded to the event script."""

from __future__ import annotations

import pytest

from benchmarks import event_scoring


@pytest.mark.parametrize("extra", [["--out", "elsewhere"], ["--", "--data=other"]])
def test_options_the_benchmark_sets_per_run_are_refused_before_any_work(tmp_path, capsys, extra):
    """The benchmark forwards unknown options to the event script but sets --data and --out for each run itself:
    forwarded, --out sent the run's results where the benchmark then failed to find them (a traceback after the
    whole cohort was generated and trained). It is now a usage error, and nothing is generated."""
    with pytest.raises(SystemExit) as stop:
        event_scoring.main(["--work", str(tmp_path / "work"), *extra])
    assert stop.value.code == 2
    assert "set by the benchmark for each run" in capsys.readouterr().err
    assert not (tmp_path / "work").exists()
