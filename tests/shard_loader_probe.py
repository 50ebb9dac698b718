"""Run under ``torchrun``: the ``(sample id, label)`` pairs that this rank's training loader yields in epochs
0 and 1, through the trainer's own loader (its dataset split across ranks, its loader workers).

    torchrun --standalone --nproc_per_node 2 tests/shard_loader_probe.py OUT_DIR key=value ...

writes ``OUT_DIR/rank<r>.json``: ``{"0": [[id, label], ...], "1": [...]}``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from sct.config import load_config
from sct.engine import distributed
from sct.engine.train import Trainer


def main() -> None:
    out, overrides = Path(sys.argv[1]), sys.argv[2:]
    with distributed.session("cpu") as ctx:
        trainer = Trainer(load_config(None, overrides), ctx)
        try:
            seen = {epoch: [[int(i), int(label)] for batch in trainer._loader(epoch)
                            for i, label in zip(batch["index"], batch["label"])] for epoch in (0, 1)}
        finally:
            trainer.close()
    (out / f"rank{ctx.rank}.json").write_text(json.dumps(seen))


if __name__ == "__main__":
    main()
