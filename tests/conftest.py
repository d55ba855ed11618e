"""Suite-wide settings and fixtures.

`make test` runs two pytest workers on a 2-core machine, so each uses one torch thread (two threads per worker
oversubscribe the cores and slow the suite several-fold). `cohort_factory` builds the synthetic cohorts the test
modules share.
"""

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from filelock import FileLock

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402  (after the thread setting)

torch.set_num_threads(1)


# --------------------------------------------------------------------------------------- shared cohorts
@pytest.fixture(scope="session")
def cohort_factory(tmp_path_factory) -> Callable[..., Path]:
    """`make_cohort(nights, hours, seed, variations=None, **parse_options) -> Path`: a synthetic cohort
    (`dataset.synthetic.generate_cohort`) parsed by `dataset.data_parser.parse_cohort`, built once per set of
    options and cached on disk under the pytest tmp base (shared by the pytest-xdist workers, under a file
    lock). Returns the folder holding `src/` (EDF + XML) and `dst/` (the parsed cohort).

    The cohort is shared: a test must not write into it (copy it, as tests/test_bad_inputs_training.py does,
    or parse `src/` again into its own folder)."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # the session's base, above each worker's own
    cache = base / "cohorts"
    cache.mkdir(parents=True, exist_ok=True)

    def make_cohort(
        nights: int, hours: float, seed: int, variations: dict[int, dict] | None = None, **parse_options: Any
    ) -> Path:
        from dataset import data_parser, synthetic

        options = {
            "nights": nights,
            "hours": hours,
            "seed": seed,
            "variations": variations or {},
            "parse": parse_options,
        }
        key = hashlib.sha256(json.dumps(options, sort_keys=True, default=str).encode()).hexdigest()[:16]
        root = cache / f"n{nights}-h{hours:g}-s{seed}-{key}"
        with FileLock(str(root) + ".lock"):
            if not (root / "done").is_file():
                shutil.rmtree(root, ignore_errors=True)
                synthetic.generate_cohort(root / "src", nights=nights, hours=hours, seed=seed, variations=variations)
                data_parser.parse_cohort(
                    root / "src", root / "dst", **{"workers": 1, "progress": False, **parse_options}
                )
                (root / "done").write_text(json.dumps(options, sort_keys=True, default=str) + "\n")
        return root

    return make_cohort
