"""More framework preset rows (data only; _presets.py turns each into a Preset and adds it to the table).

One row: (name, description, notes, fields), fields being LossSpec fields plus an optional
``advantages`` (the ``grpokit.advantages`` keywords; default: the namespace's). Kept apart from
_presets.py so that file stays under 600 lines.
"""

from typing import Any, Dict, List, Tuple

Row = Tuple[str, str, str, Dict[str, Any]]

ROWS: List[Row] = []
