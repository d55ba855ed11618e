"""NeuroNet pretraining on EOG: `python pretrained/unimodal/eog/train.py --data DST [--preset tiny|T|B] ...`
(or `python -m pretrained.unimodal.eog.train`). Options and outputs: pretrained/unimodal/pretrain.py, `--help`."""

from pretrained.unimodal.pretrain import main

if __name__ == "__main__":
    raise SystemExit(main(modality="eog"))
