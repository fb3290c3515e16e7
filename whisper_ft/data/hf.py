"""A Hugging Face ``datasets`` dataset (saved with ``save_to_disk``, or a hub name) -> 16 kHz wavs + manifests.

We never let ``datasets`` decode audio (its ``Audio`` feature needs torchcodec, which does not load
with CPU-only torch): the audio column is cast to ``Audio(decode=False)`` and each value -- encoded
bytes, a file path, or an already decoded ``{"array", "sampling_rate"}`` -- is decoded by
:mod:`whisper_ft.core.audio`. Output: ``output_dir/wav/<split>/<split>_<row>_<digest>.wav`` and
``output_dir/<split>.jsonl``. A re-run reuses the wavs already written.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from whisper_ft.core.errors import DataError
from whisper_ft.data.common import (
    Candidate,
    PrepareOptions,
    PrepareReport,
    SkipError,
    SkipReason,
    normalize_text,
    parallel_map,
    select,
    write_splits,
)

CHUNK_ROWS = 256  # rows decoded per batch: bounds memory when audio bytes live in the dataset


def _short(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:200]


def load_splits(dataset: str, splits: list[str] | None, config: str | None = None) -> dict[str, Any]:
    """{split name: datasets.Dataset} from a save_to_disk folder or a hub name."""
    import datasets

    path = Path(dataset).expanduser()
    if path.exists():
        try:
            loaded = datasets.load_from_disk(str(path))
        except Exception as exc:
            raise DataError(f"{path} is not a dataset saved with save_to_disk ({_short(exc)}); pass such a "
                            "folder or a hub dataset name") from exc
        if isinstance(loaded, datasets.DatasetDict):
            available = dict(loaded)
            if not splits:
                return available
            missing = [s for s in splits if s not in available]
            if missing:
                raise DataError(f"split {missing[0]!r} not in {path}: choose --split from {', '.join(available)}")
            return {s: available[s] for s in splits}
        if splits and len(splits) > 1:
            raise DataError(f"{path} holds a single split: pass one --split name (used for the manifest name)")
        return {(splits[0] if splits else "train"): loaded}
    if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("WHISPER_FT_OFFLINE") == "1":
        raise DataError(f"dataset {dataset!r} is not a local folder and the hub is offline: pass a folder saved "
                        "with Dataset.save_to_disk (or unset HF_HUB_OFFLINE)")
    try:
        if splits:
            return {s: datasets.load_dataset(dataset, config, split=s) for s in splits}
        return dict(datasets.load_dataset(dataset, config))
    except Exception as exc:
        raise DataError(f"cannot load dataset {dataset!r} from the Hugging Face hub ({_short(exc)}); check the "
                        "name, --config and network, or pass a folder saved with save_to_disk") from exc


@dataclass
class _Row:
    index: int
    audio: Any
    text: Any


def _decode(value: Any, base: Path | None) -> np.ndarray:
    """One audio cell -> 16 kHz mono float32; raises :class:`SkipError` for unusable audio."""
    from whisper_ft.core.audio import (
        SAMPLE_RATE,
        AudioEmptyError,
        AudioMissingError,
        load_audio,
    )

    try:
        if isinstance(value, dict) and value.get("array") is not None:
            audio = np.asarray(value["array"], dtype=np.float32)
            audio = audio.mean(axis=-1) if audio.ndim > 1 else audio  # (samples, channels) -> mono
            sr = int(value.get("sampling_rate") or SAMPLE_RATE)
            if audio.size and sr != SAMPLE_RATE:
                import soxr

                audio = soxr.resample(audio, sr, SAMPLE_RATE).astype(np.float32)
            if audio.size == 0:
                raise AudioEmptyError("decoded array has no samples")
            return audio
        if isinstance(value, dict) and value.get("bytes"):
            return load_audio(value["bytes"])
        path = value.get("path") if isinstance(value, dict) else value
        if not isinstance(path, str) or not path:
            raise SkipError(SkipReason.MISSING_AUDIO, "no bytes and no path in the audio cell")
        p = Path(path).expanduser()
        if not p.is_absolute() and base is not None and (base / p).exists():
            p = base / p
        return load_audio(p)
    except AudioMissingError as exc:
        raise SkipError(SkipReason.MISSING_AUDIO, _short(exc)) from exc
    except AudioEmptyError as exc:
        raise SkipError(SkipReason.EMPTY_AUDIO, _short(exc)) from exc
    except SkipError:
        raise
    except Exception as exc:  # DataError from the decoders, or anything odd in one cell
        raise SkipError(SkipReason.UNREADABLE_AUDIO, _short(exc)) from exc


def _cell_digest(value: Any) -> str:
    h = hashlib.sha1()
    if isinstance(value, dict) and value.get("bytes"):
        h.update(value["bytes"])
    elif isinstance(value, dict) and value.get("array") is not None:
        h.update(np.asarray(value["array"], dtype=np.float32).tobytes())
        h.update(str(value.get("sampling_rate")).encode())
    else:
        h.update(str(value.get("path") if isinstance(value, dict) else value).encode("utf-8"))
    return h.hexdigest()[:8]


def _row_name(split: str, row: _Row) -> str:
    value = row.audio
    path = value.get("path") if isinstance(value, dict) else value
    return f"{split}[{row.index}]" + (f" ({path})" if isinstance(path, str) and path else "")


def prepare_hf(dataset: str, split: str | list[str] | None = None, audio_column: str = "audio",
               text_column: str = "sentence", output_dir: str | Path = "dataset", config: str | None = None,
               options: PrepareOptions | None = None) -> PrepareReport:
    """Write each split's audio as 16 kHz wav under ``output_dir/wav/<split>/`` and its manifest
    ``output_dir/<split>.jsonl``. ``split``: one name, a comma-separated list, or None for all."""
    from whisper_ft.core.audio import SAMPLE_RATE, audio_info, write_wav
    from whisper_ft.core.console import progress

    options = options or PrepareOptions()
    output_dir = Path(output_dir)
    names = [s.strip() for s in split.split(",") if s.strip()] if isinstance(split, str) else split
    loaded = load_splits(dataset, names or None, config)
    base = Path(dataset) if Path(dataset).is_dir() else None
    report = PrepareReport(source="hf", output=output_dir)
    by_split = {}
    for name, ds in loaded.items():
        ds = _audio_undecoded(ds, audio_column, text_column, name)
        wav_dir = output_dir / "wav" / name

        def work(row: _Row, name: str = name, wav_dir: Path = wav_dir) -> Candidate | Exception:
            text = normalize_text(row.text) if isinstance(row.text, str) else ""
            # The file name carries a digest of the audio cell, so a re-run against a changed
            # dataset never reuses a wav that belongs to another row.
            out = wav_dir / f"{name}_{row.index:07d}_{_cell_digest(row.audio)}.wav"
            candidate = Candidate(out, text, name, id=f"{name}_{row.index:07d}", duration=0.0)
            if not text:
                return candidate  # counted as empty_text by select(); no need to decode
            try:
                if out.is_file():  # written by an earlier run (write_wav is atomic: it is complete)
                    candidate.duration = audio_info(out).duration
                    candidate.extra["_reused"] = True
                    return candidate
                audio = _decode(row.audio, base)
                candidate.duration = len(audio) / SAMPLE_RATE
                if options.min_duration <= candidate.duration <= options.max_duration:
                    write_wav(out, audio)  # filtered clips are not written
                return candidate
            except SkipError as exc:
                return exc
            except Exception as exc:  # never die half-way on one bad row
                return SkipError(SkipReason.UNREADABLE_AUDIO, _short(exc))

        candidates: list[Candidate] = []
        bar = progress(None, total=len(ds), desc=f"decoding {name}", unit="utt")
        for start in range(0, len(ds), CHUNK_ROWS):
            chunk = ds[start:start + CHUNK_ROWS]  # columnar slice: {column: [values]}
            rows = [_Row(start + i, a, t) for i, (a, t) in enumerate(zip(chunk[audio_column], chunk[text_column]))]
            # parallel_map: on Ctrl-C the queued rows are dropped and nothing waits for a stuck one.
            for row, result in zip(rows, parallel_map(work, rows, options.num_workers, disable=True)):
                if isinstance(result, SkipError):
                    report.skip(result.reason, _row_name(name, row), result.detail)
                else:
                    if result.extra.pop("_reused", False):
                        report.work["wav_reused"] += 1
                    candidates.append(result)
            bar.update(len(rows))
        bar.close()
        by_split.update(select(candidates, options, report))
        by_split.setdefault(name, [])
    return write_splits(by_split, {s: output_dir / f"{s}.jsonl" for s in by_split}, report)


def _audio_undecoded(ds: Any, audio_column: str, text_column: str, split: str) -> Any:
    """Check the columns and make sure ``datasets`` hands us undecoded audio."""
    import datasets

    for column, option in ((audio_column, "--audio_column"), (text_column, "--text_column")):
        if column not in ds.column_names:
            raise DataError(f"column {column!r} not in split {split!r}: pass {option} with one of "
                            f"{', '.join(ds.column_names)}")
    ds = ds.select_columns([audio_column, text_column])
    if isinstance(ds.features[audio_column], datasets.Audio):
        ds = ds.cast_column(audio_column, datasets.Audio(decode=False))
    return ds
