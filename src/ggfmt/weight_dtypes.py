"""The float dtypes a weight may have in safetensors files and torch pickles, in one table.

Each has torch's name (also config.json's ``dtype``), safetensors' name, how its bytes are
read with numpy (bf16 as the 16-bit patterns, which numpy has no type for) and what it is read
as (bf16 widened to f32: its bits are the high half of an f32's).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class WeightDtype:
    torch: str  # float32
    safetensors: str  # F32
    stored: np.dtype[Any]  # the bytes, as numpy reads them (little-endian)
    read_as: np.dtype[Any]  # what a reader gives
    ggml: str  # the ggml type its bytes are, copied unchanged

    @property
    def itemsize(self) -> int:
        return self.stored.itemsize


WEIGHT_DTYPES = (
    WeightDtype("float32", "F32", np.dtype("<f4"), np.dtype(np.float32), "f32"),
    WeightDtype("float16", "F16", np.dtype("<f2"), np.dtype(np.float16), "f16"),
    WeightDtype("bfloat16", "BF16", np.dtype("<u2"), np.dtype(np.float32), "bf16"),
)
BY_TORCH = {d.torch: d for d in WEIGHT_DTYPES}
BY_SAFETENSORS = {d.safetensors: d for d in WEIGHT_DTYPES}
