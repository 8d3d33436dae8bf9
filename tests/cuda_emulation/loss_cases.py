"""Writes the case list of emulate_loss.cpp: every preset, then the rule options of tests/loss_cases.json
(the list tests/python/test_loss_gpu.py runs on the GPU), one line each: "name field=value ...", the
engine fields of grpokit.LossSpec. A second argument writes the full_blocks rows to that file.

    python tests/cuda_emulation/loss_cases.py CASES [FULL_BLOCK_CASES]
"""

import json
import pathlib
import sys

import grpokit
from grpokit._presets import resolve

CASES = json.loads((pathlib.Path(__file__).parents[1] / "loss_cases.json").read_text())


def lines():
    rows = [(n, resolve(n, {})) for n in sorted(grpokit.presets())]
    rows += [(c["name"], resolve(c["preset"], dict(c["overrides"]))) for c in CASES["rule_options"]]
    return {name: name + " " + " ".join(f"{k}={v}" for k, v in spec.engine_fields().items()) for name, spec in rows}


if __name__ == "__main__":
    table = lines()
    pathlib.Path(sys.argv[1]).write_text("".join(line + "\n" for line in table.values()))
    if len(sys.argv) > 2:
        pathlib.Path(sys.argv[2]).write_text("".join(table[n] + "\n" for n in CASES["full_blocks"]))
