"""Where every stage reads and writes: one :class:`Layout` per project root.

``dvc repro`` runs the stages with ``Layout()`` (paths relative to the project root, as
dvc.yaml names them); ``vdsh study`` and ``vdsh compare`` give each group of runs its own root,
so nothing changes directory and nothing they write touches the DVC outputs.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

__all__ = ["Layout"]


@dataclasses.dataclass(frozen=True)
class Layout:
    """The paths of the pipeline's files under ``root``."""

    root: Path = Path(".")

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    @property
    def raw(self) -> Path:
        """The download stage's output: images, labels, info."""
        return self.root / "data" / "raw.npz"

    @property
    def features(self) -> Path:
        """The features stage's output: the split and the standardized features."""
        return self.root / "data" / "features.npz"

    def model(self, method, bits) -> Path:
        return self.root / "models" / f"{method}_{bits}.npz"

    def codes(self, method, bits) -> Path:
        return self.root / "codes" / f"{method}_{bits}.npz"

    def eval(self, method, bits) -> Path:
        return self.root / "reports" / "eval" / f"{method}_{bits}.json"

    def pr(self, method, bits) -> Path:
        return self.root / "reports" / "eval" / f"pr_{method}_{bits}.csv"

    def curve(self, method, bits) -> Path:
        return self.root / "reports" / "train" / f"{method}_{bits}.csv"

    def checkpoint(self, method, bits) -> Path:
        """Training checkpoints live outside DVC's outputs (DVC deletes a stage's outputs before
        rerunning it, which would throw the checkpoint away); removed once the model is saved."""
        return self.root / ".checkpoints" / f"{method}_{bits}.npz"

    @property
    def reports(self) -> Path:
        """The report stage's folder (metrics.json, results.md/.csv, plots)."""
        return self.root / "reports"
