"""Suite-wide settings: `make test` runs two pytest workers on a 2-core machine, so each uses one torch thread
(two threads per worker oversubscribe the cores and slow the suite several-fold)."""
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402  (after the thread setting)

torch.set_num_threads(1)
