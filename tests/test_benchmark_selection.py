"""The efficacy benchmark chooses best/ on utterances it never reports (issue: select apart from report)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from whisper_ft.core.manifest import Utterance, read_manifest, write_manifest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import finetune_efficacy as fe  # noqa: E402


def _pool(tmp_path, make_wav, n_sentences: int, voices: int) -> Path:
    wav = make_wav("a.wav", 1.0)
    utts = [Utterance(str(wav), f"句子{s}", 1.0, id=f"s{s}v{v}", language="zh")
            for s in range(n_sentences) for v in range(voices)]
    path = tmp_path / "pool.jsonl"
    write_manifest(path, utts, relative=False)
    return path


def test_selection_never_holds_a_reported_utterance_or_sentence(tmp_path, make_wav):
    pool = _pool(tmp_path, make_wav, n_sentences=10, voices=3)  # each sentence in 3 voices, as TTS test sets
    reported = tmp_path / "reported.jsonl"
    write_manifest(reported, [u for u in read_manifest(pool) if u.id.endswith("v0")][:4], relative=False)
    select = fe.selection_set(pool, reported, 12, tmp_path)
    chosen = read_manifest(select)
    shown = read_manifest(reported)
    assert len(chosen) == 12
    assert not {u.key for u in chosen} & {u.key for u in shown}
    assert not {u.sentence for u in chosen} & {u.sentence for u in shown}  # not even in another voice
    again = read_manifest(fe.selection_set(pool, reported, 12, tmp_path))
    assert [u.key for u in again] == [u.key for u in chosen]  # seeded
    with pytest.raises(SystemExit, match="only 18 utterances"):
        fe.selection_set(pool, reported, 19, tmp_path)


def test_a_given_test_manifest_is_split_into_selection_and_report(tmp_path, make_wav):
    pool = _pool(tmp_path, make_wav, n_sentences=20, voices=1)
    select, report = fe.split_off_selection(pool, 5, tmp_path)
    s, r = [u.key for u in read_manifest(select)], [u.key for u in read_manifest(report)]
    assert len(s) == 5 and len(r) == 15 and not set(s) & set(r)
    assert sorted(s + r) == sorted(u.key for u in read_manifest(pool))
    with pytest.raises(SystemExit, match="leaves none to report"):
        fe.split_off_selection(pool, 20, tmp_path)
