"""The CPU this process runs on: its model name and the instruction sets that decide CTranslate2's speed.

CTranslate2's int8 matrix products are fast with VNNI (AVX-512 VNNI, or AVX-VNNI on newer
desktop chips) and AMX; without them (AVX2 only: many laptops and cloud CPUs) int8 is weak and
``int8_float32`` or ``float32`` may decode faster. Read from ``/proc/cpuinfo`` on Linux, else from
numpy's CPU feature table (no AMX there), else unknown.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

# cpuinfo flag -> how we name it; the order is the report's
FLAG_NAMES = {"avx2": "AVX2", "avx512f": "AVX-512F", "avx512_vnni": "AVX-512 VNNI", "avx_vnni": "AVX-VNNI",
              "amx_int8": "AMX"}
_NUMPY_FLAGS = {"AVX2": "avx2", "AVX512F": "avx512f", "AVX512VNNI": "avx512_vnni", "AVXVNNI": "avx_vnni"}


@dataclass(frozen=True)
class CpuInfo:
    model: str  # e.g. "Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz"
    flags: frozenset[str]  # the FLAG_NAMES keys present
    source: str  # where the flags came from: /proc/cpuinfo, numpy, or "unknown"

    @property
    def instruction_sets(self) -> list[str]:
        return [name for flag, name in FLAG_NAMES.items() if flag in self.flags]

    @property
    def has_vnni(self) -> bool:
        return bool({"avx512_vnni", "avx_vnni", "amx_int8"} & self.flags)

    def speed_note(self) -> str:
        """What the instruction sets mean for CTranslate2 on this CPU."""
        if self.source == "unknown":
            return "instruction sets unknown: --compute_type auto measures which compute type is fastest"
        if self.has_vnni:
            extra = " and AMX" if "amx_int8" in self.flags else ""
            return f"VNNI{extra}: CTranslate2 int8 is fast here"
        if "avx2" in self.flags:
            return ("no VNNI (AVX2 only): CTranslate2 int8 is weak here; int8_float32 or float32 may be faster "
                    "(--compute_type auto measures it)")
        return "no AVX2: CTranslate2 runs slowly on this CPU"

    def to_dict(self) -> dict:
        return {"model": self.model, "instruction_sets": self.instruction_sets, "source": self.source}


def parse_cpuinfo(text: str) -> CpuInfo:
    """The first processor's model name and flags in the text of Linux's ``/proc/cpuinfo``."""
    model, flags = "", None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key == "model name" and not model:
            model = value.strip()
        elif key in ("flags", "features") and flags is None:  # "Features" on ARM
            flags = set(value.split())
        if model and flags is not None:
            break
    return CpuInfo(model or platform.processor() or platform.machine(),
                   frozenset(f for f in FLAG_NAMES if f in (flags or ())), "/proc/cpuinfo" if flags is not None else "unknown")


def _from_numpy() -> CpuInfo | None:
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as features
    except ImportError:
        try:
            from numpy.core._multiarray_umath import __cpu_features__ as features
        except ImportError:
            return None
    flags = frozenset(flag for key, flag in _NUMPY_FLAGS.items() if features.get(key))
    return CpuInfo(platform.processor() or platform.machine(), flags, "numpy")


@lru_cache(maxsize=1)
def cpu_info() -> CpuInfo:
    """This machine's CPU (read once per process)."""
    try:
        info = parse_cpuinfo(Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace"))
        if info.source != "unknown":
            return info
    except OSError:
        pass
    return _from_numpy() or CpuInfo(platform.processor() or platform.machine(), frozenset(), "unknown")
