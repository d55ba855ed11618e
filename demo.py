"""End-to-end demo on a freshly generated synthetic NSRR cohort (the README's `make demo`).

Stages run in order; each writes under --out and prints what it produced:
  1. generate   dataset/synthetic.py   EDF + NSRR XML nights in the NSRR folder layout
  2. parse      dataset/data_parser.py one Parquet per night + events + manifest + splits
  3. summarise  manifest summary and label statistics per split

Usage: python demo.py [--out demo_out] [--nights 12] [--hours 2] [--seed 0] [--workers 2]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from dataset import data_parser, synthetic
from dataset.constants import STAGE_NAMES


def _banner(text: str) -> None:
    print(f"\n=== {text} " + "=" * max(0, 70 - len(text)), flush=True)


def label_statistics(dst: Path) -> pd.DataFrame:
    """Per split: epochs, stage distribution (%), apnea / hypopnea epoch prevalence (%), scored AHI median."""
    manifest = pd.read_parquet(dst / "manifest.parquet")
    splits = json.loads((dst / "splits.json").read_text())
    rows = []
    for split, recordings in splits["recordings"].items():
        stages, apnea, hypopnea = [], [], []
        for rec in recordings:
            table = pq.read_table(dst / "recordings" / f"{rec}.parquet", columns=["stage", "apnea", "hypopnea"])
            stages.append(table["stage"].to_numpy())
            apnea.append(table["apnea"].to_numpy())
            hypopnea.append(table["hypopnea"].to_numpy())
        if not recordings:
            continue
        stage = np.concatenate(stages)
        scored = stage >= 0
        row = {"split": split, "recordings": len(recordings), "epochs": int(stage.size),
               "unscored %": round(100 * float(np.mean(~scored)), 1)}
        for k, name in enumerate(STAGE_NAMES):
            row[f"{name} %"] = round(100 * float(np.mean(stage[scored] == k)), 1) if scored.any() else float("nan")
        row["apnea %"] = round(100 * float(np.mean(np.concatenate(apnea))), 2)
        row["hypopnea %"] = round(100 * float(np.mean(np.concatenate(hypopnea))), 2)
        ahi = manifest.set_index("recording_id").loc[recordings, "ahi_scored"]
        row["AHI median"] = round(float(np.median(ahi)), 1)
        rows.append(row)
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("demo_out"))
    parser.add_argument("--nights", type=int, default=12)
    parser.add_argument("--hours", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    started = time.time()
    src, dst = args.out / "cohort", args.out / "parsed"

    _banner(f"1. generate {args.nights} synthetic nights of {args.hours:g} h -> {src}")
    nights = synthetic.generate_cohort(src, nights=args.nights, hours=args.hours, seed=args.seed)
    print(f"wrote {len(nights)} EDF + NSRR XML pairs")

    _banner(f"2. parse -> {dst}")
    manifest = data_parser.parse_cohort(src, dst, workers=args.workers)

    _banner("3. manifest summary and label statistics")
    print(manifest["status"].value_counts().to_string())
    ok = manifest[manifest["status"] == "ok"]
    print(f"\n{len(ok)} recordings ok, {int(ok['n_epochs'].sum())} epochs, "
          f"{ok['subject_id'].nunique()} subjects; scored AHI range "
          f"{ok['ahi_scored'].min():.1f}-{ok['ahi_scored'].max():.1f} /h")
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(label_statistics(dst).to_string(index=False))
    print(f"\ndemo finished in {time.time() - started:.0f} s; outputs under {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
