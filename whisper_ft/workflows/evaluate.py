"""``whisper-ft eval``: decode a test manifest for real and score it.

Real generation from the prompt tokens only (Whisper-Finetune's evaluation feeds the reference's
first tokens and so reports optimistic numbers; we don't), with the transformers model
(``backend="hf"``) or CTranslate2 (``backend="ct2"``, the same prompt, so the two are comparable).
Utterances are decoded in batches sorted by duration (longest first; ``batch_size`` clips, or when
packing about ``batch_size`` windows' worth: :func:`whisper_ft.decoding.packing.decode_batches`), with a
progress bar on stderr; utterances over 30 s are transcribed with long-form decoding. Decoding is deterministic on
both backends (greedy or beam search at temperature 0, previous text as the prompt of the next
30 s window; temperature fallback only with ``temperature_fallback=True``), so a result can be
reproduced and the backends compared. Packing (on by default with ``ct2``, ``pack=True`` for
``hf``): short same-language clips share 30 s windows decoded with timestamps and are split back
(whisper_ft.decoding.packing); a model without timestamp tokens is decoded unpacked, said on stderr. Audio files are checked before anything is decoded (a
missing one is an error); a clip that cannot be decoded is skipped and listed in the report.
Results: a :class:`EvalReport`, written as ``report.json`` (metric, counts, model, data, settings,
time, RTF, skipped clips) and ``predictions.jsonl`` (per utterance: id, ref, hyp, normalised
forms, errors).
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from whisper_ft.core.audio import N_SAMPLES, SAMPLE_RATE
from whisper_ft.core.console import log, progress
from whisper_ft.core.errors import DataError, WhisperFtError
from whisper_ft.core.languages import default_metric, normalize_language
from whisper_ft.core.manifest import Utterance, read_manifest
from whisper_ft.core.scoring import AUTO_METRIC, ScoreResult, score, validate_metric
from whisper_ft.core.writers import check_output_dir

if TYPE_CHECKING:
    from whisper_ft.decoding.backend import Backend

BACKENDS = ("hf", "ct2")


@dataclass
class EvalSettings:
    model: str
    test_data: str | Path
    metric: str | None = None  # None: cer for zh/ja/ko/..., else wer; auto (mixed sets): each utterance by its language
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
    # short same-language clips share 30 s windows, split back by timestamps (the fast path);
    # None: on with --backend ct2, off with hf; either way off for a model without timestamps
    pack: bool | None = None
    temperature_fallback: bool = False  # clips over 30 s: retry a doubtful window at higher temperatures (sampling)
    raw: bool = False  # score the texts as written (whitespace collapsed only), not through the normaliser
    prompt: str | None = None  # text every clip is conditioned on as the previous text (Whisper's initial prompt)
    hotwords: str | None = None  # words to favour (faster-whisper's hotwords; folded into the prompt of short clips)
    calibrate: bool = False  # ct2, compute_type auto: measure the choice again (whisper_ft.decoding.calibration)


@dataclass(frozen=True)
class SkippedClip:
    """A test clip that could not be decoded (not scored; listed in report.json)."""

    id: str
    audio: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"id": self.id, "audio": self.audio, "reason": self.reason}


@dataclass
class EvalReport:
    settings: EvalSettings
    score: ScoreResult
    utterances: list[Utterance]
    languages: list[str | None]
    model: dict[str, Any]
    audio_seconds: float
    load_seconds: float  # loading the model
    decode_seconds: float  # decoding only (features, encoder, decoder)
    started: str
    load_audio_seconds: float = 0.0  # reading and resampling the audio files
    skipped: list[SkippedClip] = field(default_factory=list)

    @property
    def rtf(self) -> float:
        """Real-time factor: decoding time / audio duration (loading the model or the audio not counted)."""
        return self.decode_seconds / self.audio_seconds if self.audio_seconds > 0 else 0.0

    def summary(self) -> str:
        line = (f"{self.score.summary()}; RTF {self.rtf:.3f} (decoding {self.decode_seconds:.1f} s for "
                f"{self.audio_seconds:.1f} s of audio; loading the audio {self.load_audio_seconds:.1f} s more)")
        if self.skipped:
            line += f"; {len(self.skipped)} clip(s) skipped: could not be decoded (listed in report.json)"
        return line

    def to_dict(self) -> dict[str, Any]:
        s = self.settings
        return {
            **self.score.to_dict(),
            "model": self.model,
            "data": {"path": str(s.test_data), "n_utterances": len(self.utterances),
                     "audio_seconds": round(self.audio_seconds, 3)},
            "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(s).items()
                         if k not in {"model", "test_data", "show_progress"}},
            "time": {"started": self.started, "load_model_seconds": round(self.load_seconds, 3),
                     "load_audio_seconds": round(self.load_audio_seconds, 3),
                     "decode_seconds": round(self.decode_seconds, 3)},
            "rtf": round(self.rtf, 4),
            "skipped": [c.to_dict() for c in self.skipped],
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
    """The given metric; else the usual one of the test set's languages (cer for zh/ja/ko/...,
    wer otherwise), or ``auto`` (each utterance by its own language, pooled as ``mer``) when the
    set mixes both kinds."""
    if metric:
        return validate_metric(metric, auto=True)
    usual = {default_metric(lang) for lang in languages if lang}
    if len(usual) > 1:
        return AUTO_METRIC
    return usual.pop() if usual else "cer"


def load_test_data(path: str | Path) -> list[Utterance]:
    """The manifest's utterances; an empty manifest or a missing audio file is an error (found
    before any model is loaded)."""
    utterances = read_manifest(path)
    if not utterances:
        raise WhisperFtError(f"test data {path} is empty: prepare it with `whisper-ft prepare ...`")
    missing = [u for u in utterances if not u.audio_file.is_file()]
    if missing:
        raise DataError(f"{len(missing)} of {len(utterances)} audio files in {path} do not exist (first: "
                        f"{missing[0].audio_file}): fix the paths (relative ones are relative to the manifest's folder)")
    return utterances


def check_positive(option: str, value: int | None) -> None:
    """``--option`` must be None (default) or at least 1."""
    if value is not None and value < 1:
        raise WhisperFtError(f"{option} must be at least 1 (got {value})")



def load_eval_backend(settings: EvalSettings) -> Backend:
    """The :class:`~whisper_ft.decoding.backend.Backend` that ``settings`` names (a speech-LLM run
    folder opens as its own backend)."""
    from whisper_ft.decoding.backend import load_backend

    return load_backend(settings.model, kind=validate_backend(settings.backend), device=settings.device,
                        compute_type=settings.compute_type, threads=settings.cpu_threads,
                        parallel_batches=settings.backend == "ct2" and settings.pack is not False,
                        max_new_tokens=settings.max_new_tokens, beam_size=settings.num_beams,
                        calibration_clips=lambda: calibration_clips(settings), calibrate=settings.calibrate)


def calibration_clips(settings: EvalSettings, max_clips: int = 40) -> list:
    """``--compute_type auto`` on first use: the test set's first clips (real speech, the user's own,
    with their transcripts: drift is measured as the change of CER/WER)."""
    from whisper_ft.decoding.calibration import MAX_SECONDS_PER_LANGUAGE, CalibrationClip, take_clips

    clips, seconds = [], 0.0
    for u in read_manifest(settings.test_data)[:max_clips]:
        if seconds >= MAX_SECONDS_PER_LANGUAGE:
            break
        try:
            audio = u.load_audio()
        except WhisperFtError:
            continue
        clips.append(CalibrationClip(audio, normalize_language(settings.language or u.language), u.key, u.sentence))
        seconds += len(audio) / SAMPLE_RATE
    return take_clips(clips)


def eval_options(settings: EvalSettings, backend: Backend | None = None):
    """The :class:`~whisper_ft.decoding.options.DecodingOptions` ``settings`` ask for; packing
    (default: on with ct2, off with hf) only where ``backend`` can pack (said on stderr otherwise)."""
    from whisper_ft.decoding.backend import NO_TIMESTAMPS_MESSAGE
    from whisper_ft.decoding.options import DecodingOptions

    pack = settings.pack if settings.pack is not None else settings.backend == "ct2"
    if pack and backend is not None and not getattr(backend, "can_pack", False):
        if "packing" in backend.info:  # a Whisper model without timestamps (not a speech-LLM or test backend)
            log(NO_TIMESTAMPS_MESSAGE.format(model=settings.model))
        pack = False
    options = DecodingOptions(language=normalize_language(settings.language), task=settings.task,
                              beam_size=settings.num_beams, max_new_tokens=settings.max_new_tokens, pack=pack,
                              initial_prompt=settings.prompt, hotwords=settings.hotwords)
    return options.with_fallback(settings.temperature_fallback)


def evaluate(settings: EvalSettings, *, backend: Backend | None = None) -> EvalReport:
    """Decode ``settings.test_data`` with ``settings.model`` and score it (see the module docstring).

    ``backend`` (a :class:`~whisper_ft.decoding.backend.Backend`) replaces the model named in ``settings``.
    """
    from whisper_ft.decoding.hf import validate_task
    from whisper_ft.decoding.packing import decode_batches

    kind = validate_backend(settings.backend)
    validate_task(settings.task)
    for option, value in (("--batch_size", settings.batch_size), ("--num_beams", settings.num_beams),
                          ("--cpu_threads", settings.cpu_threads), ("--max_new_tokens", settings.max_new_tokens)):
        check_positive(option, value)
    forced = normalize_language(settings.language)
    utterances = load_test_data(settings.test_data)
    languages = [forced or normalize_language(u.language) for u in utterances]
    metric = choose_metric(settings.metric, languages)
    settings = EvalSettings(**{**asdict(settings), "metric": metric, "language": forced, "backend": kind})
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    t0 = time.perf_counter()
    backend = backend or load_eval_backend(settings)
    load_seconds = time.perf_counter() - t0
    options = eval_options(settings, backend)
    # long recordings: no cap on new tokens, never packed (as before the backend seam)
    long_options = options.replace(max_new_tokens=None, pack=False)
    # what the backend really does (a model without timestamps is not packed)
    settings = EvalSettings(**{**asdict(settings), "pack": options.pack})

    batches = decode_batches([u.duration for u in utterances], settings.batch_size, pack=bool(options.pack))
    hyps: list[str | None] = [None] * len(utterances)
    skipped: dict[int, SkippedClip] = {}
    audio_seconds = load_audio_seconds = decode_seconds = 0.0
    bar = progress(None, total=len(utterances), desc=f"eval ({kind})", unit="utt",
                   disable=not settings.show_progress)
    try:
        for batch in batches:
            t0 = time.perf_counter()
            idx, audios = [], []
            for i in batch:
                try:
                    audios.append(utterances[i].load_audio())
                    idx.append(i)
                except DataError as exc:  # unreadable: skip it, keep the rest of the run
                    skipped[i] = SkippedClip(utterances[i].key, str(utterances[i].audio_file), str(exc))
            t1 = time.perf_counter()
            load_audio_seconds += t1 - t0
            audio_seconds += sum(len(a) for a in audios) / SAMPLE_RATE
            short = [k for k, a in enumerate(audios) if len(a) <= N_SAMPLES]
            for k, a in enumerate(audios):
                if len(a) > N_SAMPLES:
                    hyps[idx[k]] = backend.transcribe(a, long_options.replace(language=languages[idx[k]])).text
            if short:
                texts = backend.texts([audios[k] for k in short], [languages[idx[k]] for k in short], options)
                for k, text in zip(short, texts):
                    hyps[idx[k]] = text
            decode_seconds += time.perf_counter() - t1
            bar.update(len(batch))
    finally:
        bar.close()
    for clip in skipped.values():
        log(f"skipped {clip.audio}: {clip.reason}")
    kept = [i for i in range(len(utterances)) if i not in skipped]
    if not kept:
        first = next(iter(skipped.values()))
        raise DataError(f"none of the {len(utterances)} clips in {settings.test_data} could be decoded "
                        f"(first: {first.audio}: {first.reason})")
    utterances, languages = [utterances[i] for i in kept], [languages[i] for i in kept]
    result = score([u.sentence for u in utterances], [hyps[i] or "" for i in kept], metric=metric, language=forced, raw=settings.raw,
                   languages=languages)
    return EvalReport(settings=settings, score=result, utterances=utterances, languages=languages,
                      model={**backend.info, **({"pack": options.pack} if "packing" in backend.info else {})},
                      audio_seconds=audio_seconds, load_seconds=load_seconds,
                      decode_seconds=decode_seconds, started=started, load_audio_seconds=load_audio_seconds,
                      skipped=[skipped[i] for i in sorted(skipped)])


def default_output_dir(settings: EvalSettings) -> Path:
    """``reports/<model>_<data>_<backend>``: one folder per model, test set and backend."""
    def slug(text: str) -> str:
        return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "x"

    backend = validate_backend(settings.backend)
    model = Path(settings.model)
    model_name = f"{model.parent.name}-{model.name}" if model.name in {"best", "last", "final"} else model.name
    data = Path(settings.test_data)
    data_name = data.stem if data.stem not in {"test", "dev", "train"} else f"{data.parent.name}-{data.stem}"
    return Path("reports") / f"{slug(model_name)}_{slug(data_name)}_{backend}"


def write_report(report: EvalReport, output_dir: str | Path | None = None) -> tuple[Path, Path]:
    """Write ``report.json`` and ``predictions.jsonl`` into ``output_dir``; returns both paths."""
    from whisper_ft.models.output_dir import write_json

    out = check_output_dir(output_dir if output_dir else default_output_dir(report.settings))
    report_path = out / "report.json"
    write_json(report_path, report.to_dict())
    preds = out / "predictions.jsonl"
    tmp = preds.with_name(f".{preds.name}.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for rec in report.prediction_records():
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    tmp.replace(preds)
    return report_path, preds
