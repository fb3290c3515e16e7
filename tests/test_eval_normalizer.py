"""`eval` scores through the named number-aware normaliser by default; `--raw` scores texts as written."""

from __future__ import annotations

import json

from whisper_ft.workflows.evaluate import EvalSettings, evaluate, write_report


class FixedBackend:
    """Returns Whisper-style outputs (digits, traditional characters, punctuation) for known clips
    (the :class:`whisper_ft.decoding.backend.Backend` interface)."""

    info = {"name": "fixed", "backend": "test"}
    can_pack = False

    def __init__(self, outputs):
        self.outputs = outputs

    def texts(self, audios, languages, options):
        return [self.outputs[round(len(a) / 16_000)] for a in audios]

    def transcribe(self, audio, options, *, source=None, on_segment=None):
        from whisper_ft.core.results import Segment, Transcription

        duration = len(audio) / 16_000
        text = self.outputs[round(duration)]
        return Transcription(options.language, duration, [Segment(0, 0.0, duration, text)], source=source)


def test_eval_numbers_are_not_errors_and_raw_keeps_them(make_wav, tmp_path):
    # Real AISHELL reference / Whisper output pairs: the difference is only how numbers are written.
    cases = [(1, "四家银行一千亿", "4家銀行1000億。"), (2, "二零一五年三月份", "2015年3月份")]
    rows = []
    for secs, ref, _ in cases:
        wav = make_wav(f"{secs}.wav", float(secs))
        rows.append({"audio": {"path": str(wav)}, "sentence": ref, "language": "zh", "duration": float(secs)})
    data = tmp_path / "test.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    backend = FixedBackend({secs: hyp for secs, _, hyp in cases})

    normal = evaluate(EvalSettings(model="fixed", test_data=data, show_progress=False), backend=backend)
    raw = evaluate(EvalSettings(model="fixed", test_data=data, show_progress=False, raw=True), backend=backend)
    assert normal.score.error_rate == 0.0
    assert raw.score.error_rate > 0.3

    report_path, _ = write_report(normal, tmp_path / "normal")
    saved = json.loads(report_path.read_text())
    assert saved["normalizer"] == "whisper-ft/2"
    report_path, _ = write_report(raw, tmp_path / "raw")
    saved = json.loads(report_path.read_text())
    assert saved["normalizer"] == "raw" and saved["settings"]["raw"] is True
