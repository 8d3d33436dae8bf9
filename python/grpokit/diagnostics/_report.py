"""`Report`: the common face of every diagnostic result (readable summary, dict, matplotlib plot)."""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence


def fmt(x: Any) -> str:
    """A compact, readable number."""
    if isinstance(x, (bool,)):
        return str(x)
    if isinstance(x, int):
        return str(x)
    try:
        v = float(x)
    except (TypeError, ValueError):
        return str(x)
    if math.isnan(v):
        return "n/a"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    if v == 0.0:
        return "0"
    if 1e-3 <= abs(v) < 1e5:
        text = f"{v:.4f}" if abs(v) >= 1 else f"{v:.6f}"
        return text.rstrip("0").rstrip(".")
    return f"{v:.3e}"


class Report:
    """Base class of the diagnostics' results.

    ``print(report)`` shows a readable summary, ``report.to_dict()`` the headline numbers (plain
    Python floats, for logging), ``report.plot()`` a matplotlib figure. Subclasses fill
    ``title``, ``_lines()`` (summary lines), ``to_dict()`` and ``_plot(axes)``.
    """

    title = "grpokit diagnostics"
    n_panels = 1

    def _lines(self) -> List[str]:
        return []

    def to_dict(self) -> Dict[str, Any]:
        return {}

    def summary(self) -> str:
        bar = "-" * len(self.title)
        return "\n".join([self.title, bar, *self._lines()])

    def __str__(self) -> str:
        return self.summary()

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: {', '.join(f'{k}={fmt(v)}' for k, v in list(self.to_dict().items())[:4])}>"

    def _plot(self, axes: Sequence[Any]) -> None:
        raise NotImplementedError

    def plot(self, axes: Optional[Sequence[Any]] = None, **fig_kw: Any) -> Any:
        """Draw the report on new axes (or on ``axes``, one per panel); returns the figure."""
        import matplotlib.pyplot as plt

        if axes is None:
            fig_kw.setdefault("figsize", (5.0 * self.n_panels, 3.6))
            fig, ax = plt.subplots(1, self.n_panels, **fig_kw)
            axes = list(ax) if self.n_panels > 1 else [ax]
        else:
            axes = list(axes)
            if len(axes) != self.n_panels:
                raise ValueError(f"axes: {type(self).__name__}.plot draws {self.n_panels} panels, got {len(axes)} axes")
            fig = axes[0].figure
        self._plot(axes)
        fig.suptitle(self.title)
        fig.tight_layout()
        return fig


class Combined(Report):
    """Several reports shown and plotted together (``Report`` of a whole diagnosis)."""

    def __init__(self, *reports: Report, title: str = "grpokit diagnostics") -> None:
        self.reports = [r for r in reports if r is not None]
        self.title = title
        self.n_panels = sum(r.n_panels for r in self.reports)

    def summary(self) -> str:
        return "\n\n".join(r.summary() for r in self.reports)

    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {}
        for r in self.reports:
            prefix = type(r).__name__.replace("Report", "").lower()
            out.update({f"{prefix}/{k}": v for k, v in r.to_dict().items()})
        return out

    def _plot(self, axes: Sequence[Any]) -> None:
        i = 0
        for r in self.reports:
            r._plot(axes[i : i + r.n_panels])
            i += r.n_panels
