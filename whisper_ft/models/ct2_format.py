"""Read and write CTranslate2's ``model.bin`` (binary version 6), with numpy only.

The layout is the one ``ctranslate2.specs.model_spec.ModelSpec.save`` writes: a header (binary
version, spec name, spec revision), the variables (name, shape, dtype id, raw bytes), then
aliases (a variable stored once under one name and referenced by others).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

# Order matches the DataType enum in include/ctranslate2/types.h.
DTYPES = ("float32", "int8", "int16", "int32", "float16", "bfloat16")
BINARY_VERSION = 6


@dataclass
class CT2Model:
    spec_name: str
    spec_revision: int
    variables: dict[str, np.ndarray] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)  # alias -> variable name
    # bfloat16 has no numpy dtype: such variables are kept as raw uint16 and listed here.
    bfloat16: set[str] = field(default_factory=set)

    def get(self, name: str) -> np.ndarray:
        return self.variables[self.aliases.get(name, name)]

    def __contains__(self, name: str) -> bool:
        return name in self.variables or name in self.aliases


def _read_string(f: BinaryIO) -> str:
    (length,) = struct.unpack("<H", f.read(2))
    return f.read(length)[:-1].decode("utf-8")  # stored with a trailing NUL


def read_ct2_model(path: str | Path) -> CT2Model:
    """Parse a CTranslate2 ``model.bin``; raises ValueError on anything unexpected."""
    with open(path, "rb") as f:
        (version,) = struct.unpack("<I", f.read(4))
        if version != BINARY_VERSION:
            raise ValueError(f"{path}: CTranslate2 binary version {version} is not supported (expected 6)")
        model = CT2Model(spec_name=_read_string(f), spec_revision=struct.unpack("<I", f.read(4))[0])
        (n_vars,) = struct.unpack("<I", f.read(4))
        for _ in range(n_vars):
            name = _read_string(f)
            (rank,) = struct.unpack("<B", f.read(1))
            shape = struct.unpack(f"<{rank}I", f.read(4 * rank)) if rank else ()
            (dtype_id,) = struct.unpack("<B", f.read(1))
            (nbytes,) = struct.unpack("<I", f.read(4))
            raw = f.read(nbytes)
            if len(raw) != nbytes:
                raise ValueError(f"{path}: truncated at variable {name!r}")
            dtype = DTYPES[dtype_id]
            if dtype == "bfloat16":
                model.bfloat16.add(name)
                dtype = "uint16"
            model.variables[name] = np.frombuffer(raw, dtype=dtype).reshape(shape)
        (n_aliases,) = struct.unpack("<I", f.read(4))
        for _ in range(n_aliases):
            alias = _read_string(f)
            model.aliases[alias] = _read_string(f)
    return model


def as_float32(model: CT2Model, name: str) -> np.ndarray:
    """A weight as float32, dequantizing int8 (``<name>_scale``) and bfloat16 variables."""
    key = model.aliases.get(name, name)
    value = model.variables[key]
    if key in model.bfloat16:
        return (value.astype(np.uint32) << 16).view(np.float32)
    if value.dtype == np.int8 or value.dtype == np.int16:
        scale_name = f"{key}_scale"
        if scale_name not in model:
            raise ValueError(f"quantized variable {key!r} has no {scale_name!r}")
        scale = model.get(scale_name).astype(np.float32)
        if scale.ndim == 1:  # one scale per output row
            scale = scale.reshape((-1,) + (1,) * (value.ndim - 1))
        return value.astype(np.float32) / scale
    return value.astype(np.float32)
