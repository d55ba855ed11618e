"""NeuroNet pretraining on SpO2 at 10 Hz: `python pretrained/unimodal/spo2/train.py --data DST
[--preset tiny|fast|spectral|T|B] ...` (or `python -m pretrained.unimodal.spo2.train`); the preset takes the respiratory frame
geometry. Options and outputs: pretrained/unimodal/pretrain.py, `--help`."""

from pretrained.unimodal.pretrain import main

if __name__ == "__main__":
    raise SystemExit(main(modality="spo2"))
