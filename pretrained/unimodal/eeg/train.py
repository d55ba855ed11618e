"""NeuroNet pretraining on EEG: `python pretrained/unimodal/eeg/train.py --data DST [--preset tiny|T|B] ...`
(or `python -m pretrained.unimodal.eeg.train`). Options and outputs: pretrained/unimodal/pretrain.py, `--help`."""

from pretrained.unimodal.pretrain import main

if __name__ == "__main__":
    raise SystemExit(main(modality="eeg"))
