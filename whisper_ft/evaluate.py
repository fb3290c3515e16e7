"""``whisper-ft eval``: decode a test manifest for real and score it.

Real generation from the prompt tokens only (Whisper-Finetune's evaluation feeds the reference's
first tokens and so reports optimistic numbers; we don't), with the transformers model
(``backend="hf"``) or CTranslate2 (``backend="ct2"``, the same prompt, so the two are comparable).
Utterances are decoded in batches sorted by duration (longest first), with a progress bar on
stderr; utterances over 30 s are transcribed with long-form decoding. Results: a
:class:`EvalReport`, written as ``report.json`` (metric, counts, model, data, settings, time, RTF)
and ``predictions.jsonl`` (per utterance: id, ref, hyp, normalised forms, errors).
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from whisper_ft.audio import N_SAMPLES, SAMPLE_RATE
from whisper_ft.console import progress
from whisper_ft.errors import WhisperFtError
from whisper_ft.manifest import Utterance, read_manifest
from whisper_ft.models.languages import default_metric, normalize_language
from whisper_ft.scoring import ScoreResult, score, validate_metric

BACKENDS = ("hf", "ct2")


@dataclass
class EvalSettings:
    model: str
    test_data: str | Path
    metric: str | None = None  # None: cer for zh/ja/ko/..., else wer
    language: str | None = None  # None: each utterance's "language", else detected
    task: str = "transcribe"
    batch_size: int = 16
    num_beams: int = 1
    backend: str = "hf"
    device: str = "auto"
    compute_type: str = "auto"  # ct2 only
    cpu_threads: int | None = None
    max_new_tokens: int | None = None
    show_progress: bool = True
    pack: bool = False  # ct2 only: the packed fast path (short same-language clips share 30 s windows)


@dataclass
class EvalReport:
    settings: EvalSettings
    score: ScoreResult
    utterances: list[Utterance]
    languages: list[str | None]
    model: dict[str, Any]
    audio_seconds: float
    load_seconds: float
    decode_seconds: float
    started: str
    per_utterance_seconds: list[float] = field(default_factory=list, repr=False)

    @property
    def rtf(self) -> float:
        """Real-time factor: decoding time / audio duration (model loading not counted)."""
        return self.decode_seconds / self.audio_seconds if self.audio_seconds > 0 else 0.0

    def summary(self) -> str:
        return f"{self.score.summary()}; RTF {self.rtf:.3f} ({self.decode_seconds:.1f} s for {self.audio_seconds:.1f} s of audio)"

    def to_dict(self) -> dict[str, Any]:
        s = self.settings
        return {
            **self.score.to_dict(),
            "model": self.model,
            "data": {"path": str(s.test_data), "n_utterances": len(self.utterances),
                     "audio_seconds": round(self.audio_seconds, 3)},
            "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(s).items()
                         if k not in {"model", "test_data", "show_progress"}},
            "time": {"started": self.started, "load_seconds": round(self.load_seconds, 3),
                     "decode_seconds": round(self.decode_seconds, 3)},
            "rtf": round(self.rtf, 4),
        }

    def prediction_records(self) -> list[dict[str, Any]]:
        out = []
        for utt, lang, us in zip(self.utterances, self.languages, self.score.utterances):
            out.append({"id": utt.key, "audio": str(utt.audio_file), "duration": utt.duration, "language": lang,
                        **us.to_dict()})
        return out


def validate_backend(backend: str) -> str:
    b = (backend or "").strip().lower()
    if b not in BACKENDS:
        raise WhisperFtError(f"unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
    return b


def choose_metric(metric: str | None, languages: list[str | None]) -> str:
    """The given metric, else the usual one for the test set's most common language."""
    if metric:
        return validate_metric(metric)
    counts = Counter(lang for lang in languages if lang)
    main = counts.most_common(1)[0][0] if counts else None
    return default_metric(main) if main else "cer"


class _HFDecoder:
    def __init__(self, settings: EvalSettings):
        import torch

        from whisper_ft.models.loading import load_whisper

        if settings.cpu_threads:
            torch.set_num_threads(settings.cpu_threads)
        device = settings.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = torch.float16 if device == "cuda" else torch.float32
        self.loaded = load_whisper(settings.model, dtype=dtype, device=device)
        self.settings = settings
        self.info = {"name": settings.model, "path": str(self.loaded.source.path), "kind": self.loaded.source.kind,
                     "backend": "hf", "device": device, "dtype": str(dtype).removeprefix("torch.")}

    def texts(self, audios, languages) -> list[str]:
        from whisper_ft.decoding.hf import generate_texts

        fe = self.loaded.processor.feature_extractor
        feats = fe(audios, sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features
        s = self.settings
        return generate_texts(self.loaded.model, self.loaded.processor, feats, language=languages, task=s.task,
                              num_beams=s.num_beams, max_new_tokens=s.max_new_tokens)

    def long(self, audio, language) -> str:
        from whisper_ft.decoding.hf_transcribe import transcribe_hf

        return transcribe_hf(self.loaded.model, self.loaded.processor, audio, language=language,
                             task=self.settings.task, num_beams=self.settings.num_beams).text


class _CT2Decoder:
    def __init__(self, settings: EvalSettings):
        from whisper_ft.decoding.ct2 import default_cpu_threads, load_ct2_whisper

        # packed batches are decoded by one single-threaded worker per CPU thread (measured fastest
        # on CPU in benchmarks/inference.py); unpacked decoding keeps one worker for exactness
        threads = settings.cpu_threads or default_cpu_threads()
        inter = threads if settings.pack and settings.device != "cuda" else 1
        self.ct2 = load_ct2_whisper(settings.model, device=settings.device, compute_type=settings.compute_type,
                                    cpu_threads=threads, inter_threads=inter)
        self.settings = settings
        self.info = {"name": settings.model, "path": str(self.ct2.path), "kind": "ct2", "backend": "ct2",
                     "device": self.ct2.device, "compute_type": self.ct2.compute_type,
                     "pack": settings.pack, "inter_threads": inter}

    def texts(self, audios, languages) -> list[str]:
        from whisper_ft.decoding.ct2 import generate_texts_ct2

        s = self.settings
        return generate_texts_ct2(self.ct2, audios, language=languages, task=s.task, num_beams=s.num_beams,
                                  max_new_tokens=s.max_new_tokens, pack=s.pack)

    def long(self, audio, language) -> str:
        from whisper_ft.decoding.ct2 import transcribe_ct2

        return transcribe_ct2(self.ct2, audio, language=language, task=self.settings.task,
                              beam_size=self.settings.num_beams, temperature=0.0).text


def load_test_data(path: str | Path) -> list[Utterance]:
    utterances = read_manifest(path)
    if not utterances:
        raise WhisperFtError(f"test data {path} is empty: prepare it with `whisper-ft prepare ...`")
    return utterances


class Decoder(Protocol):
    """What :func:`evaluate` decodes with (the hf and ct2 backends implement it)."""

    info: dict[str, Any]

    def texts(self, audios: list, languages: list[str | None]) -> list[str]: ...

    def long(self, audio, language: str | None) -> str: ...


def make_decoder(settings: EvalSettings) -> Decoder:
    return _HFDecoder(settings) if settings.backend == "hf" else _CT2Decoder(settings)


def evaluate(settings: EvalSettings, *, decoder: Decoder | None = None) -> EvalReport:
    """Decode ``settings.test_data`` with ``settings.model`` and score it (see the module docstring).

    ``decoder`` replaces the model named in ``settings`` (any object with ``texts``/``long``/``info``).
    """
    from whisper_ft.decoding.hf import validate_task

    backend = validate_backend(settings.backend)
    validate_task(settings.task)
    if settings.batch_size < 1:
        raise WhisperFtError(f"--batch_size must be at least 1 (got {settings.batch_size})")
    if settings.pack and backend != "ct2":
        raise WhisperFtError("--pack needs --backend ct2 (transformers decodes every clip in its own window)")
    forced = normalize_language(settings.language)
    utterances = load_test_data(settings.test_data)
    languages = [forced or normalize_language(u.language) for u in utterances]
    metric = choose_metric(settings.metric, languages)
    settings = EvalSettings(**{**asdict(settings), "metric": metric, "language": forced, "backend": backend})
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    t0 = time.perf_counter()
    decoder = decoder or make_decoder(settings)
    load_seconds = time.perf_counter() - t0

    order = sorted(range(len(utterances)), key=lambda i: -utterances[i].duration)
    hyps: list[str] = [""] * len(utterances)
    audio_seconds = 0.0
    t1 = time.perf_counter()
    bar = progress(None, total=len(utterances), desc=f"eval ({backend})", unit="utt",
                   disable=not settings.show_progress)
    try:
        for start in range(0, len(order), settings.batch_size):
            idx = order[start:start + settings.batch_size]
            audios = [utterances[i].load_audio() for i in idx]
            audio_seconds += sum(len(a) for a in audios) / SAMPLE_RATE
            short = [k for k, a in enumerate(audios) if len(a) <= N_SAMPLES]
            for k, a in enumerate(audios):
                if len(a) > N_SAMPLES:
                    hyps[idx[k]] = decoder.long(a, languages[idx[k]])
            if short:
                texts = decoder.texts([audios[k] for k in short], [languages[idx[k]] for k in short])
                for k, text in zip(short, texts):
                    hyps[idx[k]] = text
            bar.update(len(idx))
    finally:
        bar.close()
    decode_seconds = time.perf_counter() - t1
    result = score([u.sentence for u in utterances], hyps, metric=metric, language=forced, languages=languages)
    return EvalReport(settings=settings, score=result, utterances=utterances, languages=languages,
                      model=decoder.info, audio_seconds=audio_seconds, load_seconds=load_seconds,
                      decode_seconds=decode_seconds, started=started)


def default_output_dir(settings: EvalSettings) -> Path:
    """``reports/<model>_<data>_<backend>``: one folder per model, test set and backend."""
    def slug(text: str) -> str:
        return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "x"

    model = Path(settings.model)
    model_name = f"{model.parent.name}-{model.name}" if model.name in {"best", "last", "final"} else model.name
    data = Path(settings.test_data)
    data_name = data.stem if data.stem not in {"test", "dev", "train"} else f"{data.parent.name}-{data.stem}"
    return Path("reports") / f"{slug(model_name)}_{slug(data_name)}_{settings.backend}"


def write_report(report: EvalReport, output_dir: str | Path | None = None) -> tuple[Path, Path]:
    """Write ``report.json`` and ``predictions.jsonl`` into ``output_dir``; returns both paths."""
    from whisper_ft.models.io import write_json

    out = Path(output_dir) if output_dir else default_output_dir(report.settings)
    out.mkdir(parents=True, exist_ok=True)
    report_path = out / "report.json"
    write_json(report_path, report.to_dict())
    preds = out / "predictions.jsonl"
    tmp = preds.with_name(f".{preds.name}.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for rec in report.prediction_records():
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    tmp.replace(preds)
    return report_path, preds
