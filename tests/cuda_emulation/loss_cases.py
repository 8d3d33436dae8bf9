"""Writes the case lists of emulate_loss.cpp, one line per case: "name field=value ...", the engine
fields of grpokit.LossSpec. Three files: every preset; the rule options of tests/loss_cases.json (the
list tests/python/test_loss_gpu.py runs on the GPU); its full_blocks rows (run at the real launch size).

    python tests/cuda_emulation/loss_cases.py PRESETS RULE_OPTIONS FULL_BLOCKS
"""

import json
import pathlib
import sys

import grpokit
from grpokit._presets import resolve

CASES = json.loads((pathlib.Path(__file__).parents[1] / "loss_cases.json").read_text())


def lines(rows):
    return {name: name + " " + " ".join(f"{k}={v}" for k, v in spec.engine_fields().items()) for name, spec in rows}


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    # M2PO (m2_threshold) runs on the CPU engine only: cuda/loss.cu refuses it
    presets = lines((n, resolve(n, {})) for n in sorted(grpokit.presets()) if resolve(n, {}).m2_threshold is None)
    rules = lines((c["name"], resolve(c["preset"], dict(c["overrides"]))) for c in CASES["rule_options"])
    full = [{**presets, **rules}[n] for n in CASES["full_blocks"]]
    for path, rows in zip(sys.argv[1:4], (presets.values(), rules.values(), full)):
        pathlib.Path(path).write_text("".join(row + "\n" for row in rows))
