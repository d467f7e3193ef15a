"""What every config section shares: the strict base model, location and folder-name types,
and the bounds the file formats put on sizes and names.

Kept free of any section, so each section module imports only this one (and the sections it
nests); nothing here imports beyond :mod:`factory.storage` and :mod:`factory.errors`.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict

from factory import storage

Uri = Annotated[str, AfterValidator(storage.absolute)]
"""A location: local paths become absolute when the config is loaded, URIs stay as given."""

MAX_GRID_POINTS = 10_001
"""The most values an m grid (training's or synthesis's) may hold: interval 2e-4 over [-1, 1]."""
MAX_IDENTITIES = 2 ** 24
"""Identity labels travel as float32 in RecordIO headers, exact only below 2^24."""
MAX_IMAGES = 2 ** 31 - 1
"""Image counts and record keys are 32-bit in RecordIO indexes and .bin files."""
MAX_NAME_CHARS = 250
"""Names that become MLflow experiment and run names (MLflow's own limits are near this)."""

_FOLDER_NAME = re.compile(r"[A-Za-z0-9_\-][A-Za-z0-9_.\-]{0,127}")


def _folder_name(value: str) -> str:
    """Refuse a name that would not stay one folder when joined to a storage URI."""
    if len(value) > MAX_NAME_CHARS:
        raise ValueError(f"a name of {len(value):,} characters; at most {MAX_NAME_CHARS} (it "
                         "also names MLflow runs)")
    if not _FOLDER_NAME.fullmatch(value):
        raise ValueError("expected a folder name of letters, digits, '_', '-' and '.', not "
                         "starting with '.' (it names a folder under the storage: '..', '/' or "
                         "an empty name would write elsewhere)")
    return value


FolderName = Annotated[str, AfterValidator(_folder_name)]
"""A config value that becomes one path component (run and sweep names)."""

PROFILES = ("train", "frontal", "pose", "occlusion", "lighting")
Profile = Literal["train", "frontal", "pose", "occlusion", "lighting"]

MIXUP_GRID = tuple(round(0.05 * i, 2) for i in range(21))
"""SynFace's 21 mixup coefficients, 0, 0.05 .. 1 (identity mixup phi, domain mixup psi)."""


class StrictModel(BaseModel):
    """Base for every config section: unknown keys are errors, assignments are validated, and
    no float may be NaN or infinite (one would pass every range check and fail inside Ray)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


def grid_points(low: float, high: float, interval: float) -> int:
    """How many values ``low, low + interval, .., high`` holds."""
    return int((high - low) / interval + 1e-9) + 1


def check_grid(low: float, high: float, interval: float, name: str) -> None:
    """ValueError when the grid would hold more than MAX_GRID_POINTS values (a tiny interval
    would build a list of billions while planning)."""
    if grid_points(low, high, interval) > MAX_GRID_POINTS:
        raise ValueError(f"{name} {interval:g} makes {grid_points(low, high, interval):,} values "
                         f"over [{low:g}, {high:g}]; at most {MAX_GRID_POINTS:,} are allowed")
