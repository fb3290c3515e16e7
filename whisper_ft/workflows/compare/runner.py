"""``whisper-ft compare``: every model on every test set, against the first model.

For each model (loaded once, reused for every set) and test set: CER/WER with S/D/I from
:func:`whisper_ft.workflows.evaluate.evaluate`, hallucination indicators, a timestamp check on a few clips;
for every model after the first, the paired-bootstrap interval of its change on each set and the
utterances that got worst; and for every model, what it writes on generated non-speech clips.
The writers (``report.json``, ``report.md``, ``chart.png``, the stdout table) are in
:mod:`whisper_ft.workflows.compare.writers` and :mod:`whisper_ft.workflows.compare.chart`.
"""

from __future__ import annotations

import gc
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from whisper_ft.core.audio import N_SAMPLES, SAMPLE_RATE
from whisper_ft.core.console import log
from whisper_ft.core.errors import WhisperFtError
from whisper_ft.core.languages import normalize_language
from whisper_ft.workflows.compare.hallucination import HallucinationStats, hallucination_stats, loop_reason, loop_tokens
from whisper_ft.workflows.compare.inputs import TestSet, check_models, load_test_sets, parse_model_spec
from whisper_ft.workflows.compare.nonspeech import DEFAULT_SECONDS, NonSpeechClip, nonspeech_clips
from whisper_ft.workflows.compare.stats import PairedDifference, paired_bootstrap
from whisper_ft.workflows.compare.timestamps import TimestampCheck, check_timestamps, timestamped_transcriber
from whisper_ft.workflows.evaluate import (
    EvalReport,
    EvalSettings,
    eval_options,
    evaluate,
    load_eval_backend,
    validate_backend,
)

N_WORST = 5


@dataclass(frozen=True)
class CompareSettings:
    models: tuple[str, ...]  # the first is the reference
    test_sets: tuple[tuple[str, Path], ...]  # (name, manifest)
    backend: str = "hf"
    language: str | None = None
    num_beams: int = 1
    max_new_tokens: int | None = None
    cpu_threads: int | None = None
    device: str = "auto"
    compute_type: str = "auto"
    batch_size: int = 16
    bootstrap: int = 1000
    seed: int = 0
    timestamp_clips: int = 3  # per test set
    nonspeech_seconds: float = DEFAULT_SECONDS
    show_progress: bool = True
    pack: bool | None = None  # as eval's --pack/--no_pack (None: on with ct2)
    prompt: str | None = None  # as eval's --prompt, for every model
    hotwords: str | None = None  # as eval's --hotwords, for every model


@dataclass
class ModelRun:
    name: str
    label: str  # unique display name
    info: dict[str, Any] = field(default_factory=dict)
    load_seconds: float = 0.0

    @property
    def shown(self) -> str:
        """``label (ct2 int8)``: the short name and how the model was decoded (table and chart)."""
        how = " ".join(str(v) for v in (self.info.get("backend"), self.info.get("compute_type")) if v)
        return f"{self.label} ({how})" if how else self.label


@dataclass
class SetResult:
    """One model on one test set."""

    set_name: str
    model_index: int
    report: EvalReport
    hallucination: HallucinationStats
    timestamps: list[TimestampCheck]
    vs_reference: PairedDifference | None = None  # None for the reference model itself
    unpaired: int = 0  # utterances only one of the two reports holds (left out of the bootstrap)

    @property
    def timestamp_share(self) -> float | None:
        return sum(c.valid for c in self.timestamps) / len(self.timestamps) if self.timestamps else None

    def to_dict(self) -> dict[str, Any]:
        r = self.report
        return {
            "set": self.set_name, "model_index": self.model_index,
            **r.score.to_dict(),
            "decode_seconds": round(r.decode_seconds, 3), "rtf": round(r.rtf, 4),
            # clips eval could not read are left out of its score (and so of the comparison)
            "skipped": [c.to_dict() for c in getattr(r, "skipped", [])],
            "vs_reference": None if self.vs_reference is None else {**self.vs_reference.to_dict(),
                                                                   "unpaired": self.unpaired},
            "hallucination": self.hallucination.to_dict(),
            "timestamps": {"checked": len(self.timestamps), "valid": sum(c.valid for c in self.timestamps),
                           "share": self.timestamp_share, "clips": [c.to_dict() for c in self.timestamps]},
        }


@dataclass
class NonSpeechResult:
    model_index: int
    outputs: list[dict[str, Any]]  # {"clip", "language", "text", "text_norm", "words"}

    @property
    def hallucinated(self) -> list[dict[str, Any]]:
        return [o for o in self.outputs if o["text_norm"]]

    def to_dict(self) -> dict[str, Any]:
        return {"model_index": self.model_index, "decoded": len(self.outputs), "with_text": len(self.hallucinated),
                "words": self.words, "outputs": self.outputs}

    @property
    def words(self) -> int:
        """Words (a CJK character counts as one) written on all the clips together."""
        return sum(o["words"] for o in self.outputs)


@dataclass
class CompareReport:
    settings: CompareSettings
    models: list[ModelRun]
    sets: list[TestSet]
    results: list[SetResult]
    regressions: list[dict[str, Any]]  # {"set", "model_index", "worst": [...]}
    nonspeech: list[NonSpeechResult]
    nonspeech_clips: list[NonSpeechClip]
    nonspeech_languages: list[str | None]
    started: str
    seconds: float = 0.0

    def result(self, set_name: str, model_index: int) -> SetResult:
        for r in self.results:
            if r.set_name == set_name and r.model_index == model_index:
                return r
        raise KeyError((set_name, model_index))

    def to_dict(self) -> dict[str, Any]:
        s = asdict(self.settings)
        s["test_sets"] = [{"name": n, "path": str(p)} for n, p in self.settings.test_sets]
        s["models"] = list(self.settings.models)
        s.pop("show_progress", None)
        return {
            "settings": s,
            "started": self.started,
            "seconds": round(self.seconds, 1),
            "reference_model": self.models[0].label,
            "models": [{"index": i, "name": m.name, "label": m.label, "info": m.info,
                        "load_seconds": round(m.load_seconds, 3)} for i, m in enumerate(self.models)],
            "test_sets": [{"name": t.name, "path": str(t.path), "n_utterances": len(t.utterances),
                           "metric": self.result(t.name, 0).report.score.metric} for t in self.sets],
            "results": [r.to_dict() for r in self.results],
            "regressions": self.regressions,
            "nonspeech": {
                "clips": [{"name": c.name, "kind": c.kind, "level_dbfs": c.level_dbfs, "seconds": c.seconds}
                          for c in self.nonspeech_clips],
                "languages": self.nonspeech_languages,
                "models": [n.to_dict() for n in self.nonspeech],
            },
        }


def unique_labels(names: list[str]) -> list[str]:
    seen: Counter[str] = Counter()
    out = []
    for n in names:
        seen[n] += 1
        out.append(n if seen[n] == 1 else f"{n}#{seen[n]}")
    return out


def set_languages(sets: list[TestSet], forced: str | None) -> list[str | None]:
    """The languages non-speech clips are decoded in: the forced one, else each set's main language."""
    if forced:
        return [forced]
    langs: list[str | None] = []
    for t in sets:
        counts = Counter(normalize_language(u.language) for u in t.utterances if u.language)
        main = counts.most_common(1)[0][0] if counts else None
        if main not in langs:
            langs.append(main)
    return langs or [None]


def _keys(report: EvalReport) -> list[tuple[str, int]]:
    seen: Counter[str] = Counter()
    out = []
    for u in report.utterances:
        out.append((u.key, seen[u.key]))
        seen[u.key] += 1
    return out


def pair_utterances(ref: EvalReport, cand: EvalReport) -> tuple[list[tuple[int, int]], int]:
    """Index pairs of the same utterance in both reports (by id and occurrence), and how many are unpaired."""
    cand_at = {k: j for j, k in enumerate(_keys(cand))}
    pairs = [(i, cand_at[k]) for i, k in enumerate(_keys(ref)) if k in cand_at]
    return pairs, len(ref.utterances) + len(cand.utterances) - 2 * len(pairs)


def compare_pair(ref: EvalReport, cand: EvalReport, *, n_resamples: int, seed: int,
                 n_worst: int = N_WORST) -> tuple[PairedDifference, int, list[dict[str, Any]]]:
    """Bootstrap interval of ``cand - ref`` and the ``n_worst`` utterances ``cand`` made worse."""
    if ref.score.metric != cand.score.metric:
        raise WhisperFtError(f"cannot compare {ref.score.metric} with {cand.score.metric} on one test set")
    pairs, unpaired = pair_utterances(ref, cand)
    if not pairs:
        raise WhisperFtError("the two reports share no utterance: nothing to compare")
    ru, cu = ref.score.utterances, cand.score.utterances
    diff = paired_bootstrap([ru[i].errors for i, _ in pairs], [cu[j].errors for _, j in pairs],
                            [ru[i].ref_len for i, _ in pairs], n_resamples=n_resamples, seed=seed)
    worse = [(cu[j].errors - ru[i].errors, cu[j].error_rate - ru[i].error_rate, i, j) for i, j in pairs]
    worse = sorted((w for w in worse if w[0] > 0), key=lambda w: (-w[0], -w[1], w[2]))[:n_worst]
    worst = [{"id": ref.utterances[i].key, "ref": ru[i].ref, "reference_hyp": ru[i].hyp, "hyp": cu[j].hyp,
              "ref_len": ru[i].ref_len, "reference_errors": ru[i].errors, "errors": cu[j].errors,
              "error_diff": d, "rate_diff": round(r, 6), "loop": loop_reason(cu[j].hyp)}
             for d, r, i, j in worse]
    return diff, unpaired, worst


def _timestamp_clips(t: TestSet, k: int, forced: str | None) -> list[tuple[str, np.ndarray, str | None]]:
    """The first ``k`` clips of a set that fit one 30 s window (long-form decoding is another path)."""
    clips = []
    for u in t.utterances:
        if len(clips) >= k:
            break
        if u.duration > 30:
            continue
        audio = u.load_audio()
        if len(audio) <= N_SAMPLES:
            clips.append((u.key, audio, forced or normalize_language(u.language)))
    return clips


def run_compare(settings: CompareSettings) -> CompareReport:
    """Run the comparison (see the module docstring); all inputs are checked before any decoding."""
    from whisper_ft.core.text import normalize_text

    backend = validate_backend(settings.backend)
    for option, value in (("--beam_size", settings.num_beams), ("--batch_size", settings.batch_size),
                          ("--cpu_threads", settings.cpu_threads), ("--max_new_tokens", settings.max_new_tokens)):
        if value is not None and value < 1:
            raise WhisperFtError(f"{option} must be at least 1 (got {value})")
    if settings.bootstrap < 1:
        raise WhisperFtError(f"--bootstrap must be at least 1 (got {settings.bootstrap})")
    if settings.timestamp_clips < 0:
        raise WhisperFtError(f"--timestamp_clips must be 0 or more (got {settings.timestamp_clips})")
    if len(settings.models) < 2:
        raise WhisperFtError("compare needs at least two models, the first being the reference")
    forced = normalize_language(settings.language)
    settings = replace(settings, backend=backend, language=forced)
    sets = load_test_sets(list(settings.test_sets))
    specs = [parse_model_spec(m) for m in settings.models]
    if backend != "ct2" and any(spec.compute_type for spec in specs):
        raise WhisperFtError("a compute type after '@' in --models is CTranslate2's: add --backend ct2 (transformers "
                             "decodes at full precision)")
    check_models([spec.name for spec in specs])
    clips = nonspeech_clips(settings.nonspeech_seconds, seed=settings.seed)
    ns_langs = set_languages(sets, forced)
    ts_clips = {t.name: _timestamp_clips(t, settings.timestamp_clips, forced) for t in sets}

    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    t_start = time.perf_counter()
    models = [ModelRun(spec.name, label) for spec, label in zip(specs, unique_labels([sp.label for sp in specs]))]
    reports: dict[tuple[str, int], EvalReport] = {}
    results: list[SetResult] = []
    nonspeech: list[NonSpeechResult] = []
    for mi, m in enumerate(models):
        # each model as the user named it: a CTranslate2 folder at its stored precision (not all
        # converted to one type, which once hid an int8 export's cost), unless a type is asked for
        compute = specs[mi].compute_type or (settings.compute_type if settings.compute_type != "auto" else "default")
        base_settings = EvalSettings(
            model=m.name, test_data=sets[0].path, language=forced, batch_size=settings.batch_size,
            num_beams=settings.num_beams, backend=backend, device=settings.device,
            compute_type=compute, cpu_threads=settings.cpu_threads, pack=settings.pack,
            max_new_tokens=settings.max_new_tokens, show_progress=settings.show_progress,
            prompt=settings.prompt, hotwords=settings.hotwords,
        )
        log(f"[{mi + 1}/{len(models)}] loading {m.label} ({backend})")
        t0 = time.perf_counter()
        model_backend = load_eval_backend(base_settings)
        m.load_seconds = time.perf_counter() - t0
        m.info = dict(model_backend.info)
        options = eval_options(base_settings, model_backend)
        transcribe = timestamped_transcriber(model_backend, num_beams=settings.num_beams)
        for t in sets:
            report = evaluate(replace(base_settings, test_data=t.path), backend=model_backend)
            reports[(t.name, mi)] = report
            log(f"  {t.name}: {report.score.summary()}")
            checks = check_timestamps(transcribe, ts_clips[t.name], sample_rate=SAMPLE_RATE)
            results.append(SetResult(t.name, mi, report, hallucination_stats(report.score), checks))
        audios = [c.audio for c in clips] * len(ns_langs)
        langs = [lang for lang in ns_langs for _ in clips]
        # each non-speech clip alone in its window, as a request or a file of it would be decoded
        texts = model_backend.texts(audios, langs, options.replace(pack=False))
        outputs = []
        for k, (lang, text) in enumerate(zip(langs, texts)):
            norm = normalize_text(text, lang).strip()
            outputs.append({"clip": clips[k % len(clips)].name, "language": lang, "text": text, "text_norm": norm,
                            "words": len(loop_tokens(norm))})
        ns = NonSpeechResult(mi, outputs)
        nonspeech.append(ns)
        log(f"  non-speech: {len(ns.hallucinated)} of {len(outputs)} clips produced text ({ns.words} words)")
        del model_backend
        gc.collect()

    regressions = []
    for t in sets:
        ref = reports[(t.name, 0)]
        for mi in range(1, len(models)):
            diff, unpaired, worst = compare_pair(ref, reports[(t.name, mi)], n_resamples=settings.bootstrap,
                                                 seed=settings.seed)
            r = next(r for r in results if r.set_name == t.name and r.model_index == mi)
            r.vs_reference, r.unpaired = diff, unpaired
            regressions.append({"set": t.name, "model_index": mi, "model": models[mi].label,
                                "reference_model": models[0].label, "worst": worst})
    return CompareReport(settings=settings, models=models, sets=sets, results=results, regressions=regressions,
                         nonspeech=nonspeech, nonspeech_clips=clips, nonspeech_languages=ns_langs, started=started,
                         seconds=time.perf_counter() - t_start)
