"""NeuroNet pretraining on the thoracic effort belt at 10 Hz: `python pretrained/unimodal/thor/train.py --data DST
[--preset tiny|fast|spectral|T|B] ...` (or `python -m pretrained.unimodal.thor.train`); the preset takes the respiratory frame
geometry. Options and outputs: pretrained/unimodal/pretrain.py, `--help`."""

from pretrained.unimodal.pretrain import main

if __name__ == "__main__":
    raise SystemExit(main(modality="thor"))
