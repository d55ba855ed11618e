"""A training split whose labelled epochs hold one class only is refused by every supervised script (exit 2, one
`error:` line, nothing written): a model fitted on one class learns nothing, whatever its scores then say."""

from __future__ import annotations

import json
import shutil

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from downstream.baselines import features as features_script
from downstream.fine_tuning import train as fine_tuning
from downstream.linear_probing import train as linear_probing
from tests.test_downstream import backbones, cohort  # noqa: F401


@pytest.fixture(scope="module")
def no_train_apnea(cohort, tmp_path_factory):  # noqa: F811
    """The test cohort with every apnea label of its train recordings set to 0."""
    dst = tmp_path_factory.mktemp("one_class") / "dst"
    shutil.copytree(cohort, dst)
    for recording in json.loads((dst / "splits.json").read_text())["recordings"]["train"]:
        path = dst / "recordings" / f"{recording}.parquet"
        table = pq.read_table(path)
        column = table.column("apnea")
        table = table.set_column(table.schema.get_field_index("apnea"), "apnea", pc.multiply(column, 0))
        pq.write_table(table, path)
    return dst


@pytest.mark.parametrize("script", ["probe", "fine-tuning", "trees"])
def test_a_one_class_training_split_is_a_usage_error(no_train_apnea, backbones, tmp_path, capsys, script):  # noqa: F811
    out = tmp_path / "run"
    argv = ["--data", str(no_train_apnea), "--task", "apnea", "--workers", "0", "--no-progress", "--out", str(out)]
    main = {"probe": linear_probing.main, "fine-tuning": fine_tuning.main, "trees": features_script.main}[script]
    if script != "trees":
        argv += ["--backbone", str(backbones["eeg"]), "--max-steps", "1"]
    else:
        argv += ["--channels", "eeg_c4"]
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    (line,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert "the training epochs hold one class only (per class [" in line
    assert not out.exists()
