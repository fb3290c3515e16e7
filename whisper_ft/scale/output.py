"""The output folder of ``whisper-ft transcribe``::

    OUT/whisper_ft_transcribe.json   what this folder is: the decode settings and the plan's fingerprint
    OUT/manifests/part-00000.jsonl   accepted training records (a whisper-ft manifest per shard, absolute audio paths)
    OUT/rejected/part-00000.jsonl    records decoded but unfit for training, each with its reason
    OUT/failures/part-00000.jsonl    files that could not be read or decoded, each with the error
    OUT/done/part-00000.json         written last: the shard is complete (its counts and timings)
    OUT/<format>/<key>.<format>      with --format: each file's whole transcript (json, txt, srt, vtt)
    OUT/train.jsonl                  at the end: every shard's manifest in one
    OUT/summary.json                 at the end: counts, hours, throughput of the last run

The folder must be new, empty, or one this command started with the same settings and inputs:
a rerun then decodes only the shards without a ``done/`` file (an interrupted or crashed run
resumes where it stopped). Every file is written atomically (temp file, then rename).
"""

from __future__ import annotations

import json
from pathlib import Path

from whisper_ft.core.errors import WhisperFtError

MARKER = "whisper_ft_transcribe.json"
SUBFOLDERS = ("manifests", "rejected", "failures", "done")


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def _jsonl(rows) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def _safe_relative(key: str) -> str:
    """A key as a relative path that stays inside its folder (no '..', no absolute path)."""
    parts = [p if p not in ("", ".", "..") else "_" for p in key.replace("\\", "/").split("/")]
    return "/".join(parts)


class OutputFolder:
    def __init__(self, root: str | Path, n_shards: int):
        self.root = Path(root)
        self.width = max(5, len(str(max(0, n_shards - 1))))

    def part(self, sub: str, index: int, suffix: str = ".jsonl") -> Path:
        return self.root / sub / f"part-{index:0{self.width}d}{suffix}"

    def open(self, description: dict) -> set[int]:
        """Create the folder (or check it is this run's); returns the shards already done."""
        root = self.root
        if root.exists() and not root.is_dir():
            raise WhisperFtError(f"--output_dir {root} is a file: give a folder")
        marker = root / MARKER
        if root.is_dir() and any(root.iterdir()):
            if not marker.is_file():
                raise WhisperFtError(f"--output_dir {root} holds files `whisper-ft transcribe` did not write: "
                                     "give a new or empty folder")
            try:
                before = json.loads(marker.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise WhisperFtError(f"{marker} is unreadable ({exc}): give a new --output_dir") from exc
            _check_same(before, description, root)
            return self.done_shards()
        try:
            root.mkdir(parents=True, exist_ok=True)
            _write_text(marker, json.dumps(description, indent=2, ensure_ascii=False) + "\n")
        except OSError as exc:
            raise WhisperFtError(f"cannot write to --output_dir {root}: {exc.strerror or exc}; "
                                 "give a writable folder") from exc
        return set()

    def done_shards(self) -> set[int]:
        done = set()
        folder = self.root / "done"
        if folder.is_dir():
            for p in folder.glob("part-*.json"):
                try:
                    done.add(int(p.stem.removeprefix("part-")))
                except ValueError:
                    continue
        return done

    def write_shard(self, index: int, result: dict) -> dict:
        """Write one shard's files, its ``done/`` file last; returns its stats."""
        records, rejected = result["records"], result["rejected"]
        if result["failures"]:
            _write_text(self.part("failures", index), _jsonl(result["failures"]))
        if rejected:
            _write_text(self.part("rejected", index), _jsonl(rejected))
        for key, outputs in result["outputs"].items():
            for fmt, text in outputs.items():
                _write_text(self.root / fmt / f"{_safe_relative(key)}.{fmt}", text)
        _write_text(self.part("manifests", index), _jsonl(records))
        stats = {"records": len(records), "record_seconds": round(sum(r["duration"] for r in records), 3),
                 "rejected": len(rejected), "failed": len(result["failures"]),
                 "audio_seconds": round(result["audio_seconds"], 3),
                 "decode_seconds": round(result["decode_seconds"], 3), "worker": result["worker"]}
        _write_text(self.part("done", index, ".json"), json.dumps(stats) + "\n")
        return stats

    def shard_stats(self) -> list[dict]:
        return [json.loads(p.read_text(encoding="utf-8")) for p in sorted((self.root / "done").glob("part-*.json"))]

    def failures(self, limit: int | None = None) -> list[dict]:
        out: list[dict] = []
        for p in sorted((self.root / "failures").glob("part-*.jsonl")):
            for line in p.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    out.append(json.loads(line))
                    if limit is not None and len(out) >= limit:
                        return out
        return out

    def merge(self) -> Path:
        """Every shard's manifest as one ``train.jsonl``."""
        from whisper_ft.core.manifest import read_manifest, write_manifest

        def utterances():
            for p in sorted((self.root / "manifests").glob("part-*.jsonl")):
                yield from read_manifest(p)

        path = self.root / "train.jsonl"
        write_manifest(path, utterances(), relative=False)
        return path

    def write_summary(self, summary: dict) -> Path:
        path = self.root / "summary.json"
        _write_text(path, json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
        return path


def _check_same(before: dict, now: dict, root: Path) -> None:
    if before.get("tool") != now["tool"]:
        raise WhisperFtError(f"--output_dir {root} was not written by `whisper-ft transcribe`: give a new folder")
    old, new = before.get("settings", {}), now["settings"]
    changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    if changed:
        shown = ", ".join(f"{k}: {old.get(k)!r} there, {new.get(k)!r} now" for k in changed[:3])
        raise WhisperFtError(f"--output_dir {root} was started with other settings ({shown}): "
                             "resume with the same settings, or give a new folder")
    if before.get("plan") != now["plan"]:
        raise WhisperFtError(f"--output_dir {root} was started on other inputs ({before.get('files')} files in "
                             f"{before.get('shards')} shards then, {now['files']} in {now['shards']} now): "
                             "resume with the same inputs and shard options, or give a new folder")

