"""Shared by the benches: Kendall's tau and a resumable record of finished runs."""

from __future__ import annotations

import json
from pathlib import Path


def kendall_tau(x: list[float], y: list[float]) -> float:
    """Kendall's tau-b (ties handled); nan when either side is constant."""
    conc = disc = tx = ty = 0
    for i in range(len(x)):
        for j in range(i + 1, len(x)):
            dx, dy = x[i] - x[j], y[i] - y[j]
            if dx == 0 and dy == 0:
                continue
            if dx == 0:
                tx += 1
            elif dy == 0:
                ty += 1
            elif dx * dy > 0:
                conc += 1
            else:
                disc += 1
    denom = ((conc + disc + tx) * (conc + disc + ty)) ** 0.5
    return (conc - disc) / denom if denom else float("nan")


class Runs:
    """Every measured run, saved (atomically) after each one: an interrupted bench resumes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data = json.loads(path.read_text()) if path.exists() else {"runs": {}}

    def get(self, key: str):
        return self.data["runs"].get(key)

    def put(self, key: str, value) -> None:
        self.data["runs"][key] = value
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.data, indent=1))
        tmp.replace(self.path)
