"""Writers for a :class:`~whisper_ft.workflows.compare.runner.CompareReport`: the stdout table,
``report.json``, ``report.md`` and (via :mod:`whisper_ft.workflows.compare.chart`) ``chart.png``.

Each file is written beside its final name and renamed into place, so an interrupted run never
leaves a half-written report; a file of those names that compare did not write (report.json's
``tool``, report.md's title) is never replaced.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from whisper_ft.workflows.compare.runner import CompareReport, SetResult

COLUMNS = ("set", "model", "metric", "error %", "S", "D", "I", "Δ vs ref [95% CI]", "sig.",
           "loops", "long", "ins. %", "timestamps ok")


def shown(text: str, limit: int) -> str:
    """Model output made safe to print: control characters replaced, cut at ``limit`` characters."""
    text = "".join(ch if ch.isprintable() else "\ufffd" for ch in text)
    return text if len(text) <= limit else text[:limit] + "…"


def _pct(x: float) -> str:
    return f"{100 * x:.2f}"


def delta_text(r: SetResult) -> str:
    d = r.vs_reference
    if d is None:
        return "(reference)"
    return f"{100 * d.delta:+.2f} [{100 * d.low:+.2f}, {100 * d.high:+.2f}]"


def row_cells(report: CompareReport, r: SetResult) -> list[str]:
    s = r.report.score
    h = r.hallucination
    share = r.timestamp_share
    ts = "—" if share is None else f"{sum(c.valid for c in r.timestamps)}/{len(r.timestamps)}"
    sig = "" if r.vs_reference is None else ("yes" if r.vs_reference.significant else "no")
    return [r.set_name, report.models[r.model_index].shown, s.metric.upper(), _pct(s.error_rate),
            str(s.substitutions), str(s.deletions), str(s.insertions), delta_text(r), sig,
            str(h.looping), str(h.long_hypotheses), _pct(h.insertion_rate), ts]


def ordered_results(report: CompareReport) -> list[SetResult]:
    return [report.result(t.name, mi) for t in report.sets for mi in range(len(report.models))]


def nonspeech_line(report: CompareReport, mi: int) -> str:
    ns = report.nonspeech[mi]
    bad = ns.hallucinated
    words = "; ".join(f"{o['clip']}/{o['language'] or '?'}: {shown(o['text'], 40)}" for o in bad[:3])
    more = f" (+{len(bad) - 3} more)" if len(bad) > 3 else ""
    return (f"{report.models[mi].label}: {len(bad)} of {len(ns.outputs)} non-speech clips produced text "
            f"({ns.words} words)"
            + (f": {words}{more}" if bad else ""))


def format_table(report: CompareReport) -> str:
    """The plain-text table printed on stdout."""
    rows = [list(COLUMNS)] + [row_cells(report, r) for r in ordered_results(report)]
    widths = [max(len(row[c]) for row in rows) for c in range(len(COLUMNS))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append("")
    lines += [f"non-speech: {nonspeech_line(report, mi)}" for mi in range(len(report.models))]
    return "\n".join(lines)


def _md(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(_md(c) for c in row) + " |" for row in rows]
    return out


def format_markdown(report: CompareReport, chart_name: str | None = "chart.png") -> str:
    s = report.settings
    ref = report.models[0].shown
    lines = [
        MARKDOWN_TITLE,
        "",
        f"Reference: `{ref}`; compared: {', '.join(f'`{m.shown}`' for m in report.models[1:])}. "
        f"Backend {s.backend}, beam {s.num_beams}, language {s.language or 'per utterance'}, "
        + (f"prompt {s.prompt!r}, " if s.prompt else "") + (f"hotwords {s.hotwords!r}, " if s.hotwords else "") +
        f"{s.bootstrap} bootstrap resamples (seed {s.seed}); started {report.started}, took {report.seconds / 60:.1f} min.",
        "",
        "## Error rates",
        "",
        *_md_table(list(COLUMNS), [row_cells(report, r) for r in ordered_results(report)]),
        "",
        f"Error % is the corpus CER/WER (edits / reference length) with substitutions (S), deletions (D) and "
        f"insertions (I). Δ is the change against `{ref}` in points, with the 95 % paired-bootstrap interval over "
        "utterances; sig. = the interval excludes 0. loops = hypotheses that repeat an n-gram (4+ times in a row) "
        "or compress too well (zlib ratio > 2.4) where the reference does not; long = hypotheses over 2x the "
        "reference length + 5; ins. % = insertions per reference unit; timestamps ok = clips decoded with "
        "timestamps whose segments are non-empty, in order and inside the clip.",
        "",
    ]
    if chart_name:
        lines += [f"![error rates per test set]({chart_name})", ""]
    lines += ["## Test sets", ""]
    lines += _md_table(["set", "manifest", "utterances", "metric"],
                       [[t.name, str(t.path), str(len(t.utterances)), report.result(t.name, 0).report.score.metric]
                        for t in report.sets])
    lines += ["", "## Text on non-speech", "",
              f"{len(report.nonspeech_clips)} generated clips ({', '.join(c.name for c in report.nonspeech_clips)}; "
              f"{report.nonspeech_clips[0].seconds:g} s each), decoded in "
              f"{', '.join(lang or 'detected language' for lang in report.nonspeech_languages)}. "
              "Decoded like the test sets (forced language, no timestamps, no no-speech check), so any text here is "
              "a hallucination; words counts CJK characters one by one.", ""]
    ns_rows = []
    for mi, m in enumerate(report.models):
        ns = report.nonspeech[mi]
        bad = ns.hallucinated
        said = "; ".join(f"{o['clip']}/{o['language'] or '?'}: {shown(o['text'], 80)}" for o in bad[:8])
        more = f" (+{len(bad) - 8} more)" if len(bad) > 8 else ""
        ns_rows.append([m.label, f"{len(bad)}/{len(ns.outputs)}", str(ns.words), said + more if said else "—"])
    lines += _md_table(["model", "clips with text", "words", "what it wrote"], ns_rows)
    lines += ["", "## Hallucination examples", ""]
    ex_rows = [[r.set_name, report.models[r.model_index].label, e["why"], e["ref"], shown(e["hyp"], 200)]
               for r in ordered_results(report) for e in r.hallucination.examples]
    lines += _md_table(["set", "model", "why", "reference", "hypothesis"], ex_rows) if ex_rows else ["None found."]
    lines += ["", "## Timestamps", ""]
    ts_rows = []
    for r in ordered_results(report):
        problems = "; ".join(f"{c.id}: {shown(c.problem, 120)}" for c in r.timestamps if c.problem)
        ts_rows.append([r.set_name, report.models[r.model_index].label,
                        f"{sum(c.valid for c in r.timestamps)}/{len(r.timestamps)}", problems or "—"])
    lines += _md_table(["set", "model", "valid", "problems"], ts_rows)
    lines += ["", "## Worst regressions", ""]
    for reg in report.regressions:
        lines += [f"### {reg['set']}: `{reg['model']}` vs `{reg['reference_model']}`", ""]
        if not reg["worst"]:
            lines += ["No utterance got worse.", ""]
            continue
        rows = [[w["id"], w["ref"], shown(w["reference_hyp"], 200), shown(w["hyp"], 200),
                 f"{w['reference_errors']} → {w['errors']} (+{w['error_diff']}, of {w['ref_len']})"]
                for w in reg["worst"]]
        lines += _md_table(["id", "reference", f"{reg['reference_model']}", f"{reg['model']}", "errors"], rows)
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


TOOL = "whisper-ft compare"  # report.json's "tool": what marks the three files as ours
MARKDOWN_TITLE = "# whisper-ft compare"
REPORT_FILES = ("report.json", "report.md", "chart.png")


def _ours(out: Path) -> dict[str, bool]:
    """Which of the report files in ``out`` compare wrote (the missing ones count as ours)."""
    found = {name: (out / name).exists() or (out / name).is_symlink() for name in REPORT_FILES}
    try:
        data = json.loads((out / "report.json").read_text(encoding="utf-8")) if found["report.json"] else None
    except (OSError, ValueError):
        data = None
    # report.json of earlier versions has no "tool": recognised by its own keys
    json_ours = isinstance(data, dict) and (data.get("tool") == TOOL or {"settings", "reference_model", "results",
                                                                           "nonspeech"} <= data.keys())
    try:
        with open(out / "report.md", encoding="utf-8") as f:
            md_ours = f.readline().rstrip("\n") == MARKDOWN_TITLE
    except (OSError, ValueError):
        md_ours = False
    links = {name: (out / name).is_symlink() for name in REPORT_FILES}
    return {"report.json": not found["report.json"] or (json_ours and not links["report.json"]),
            "report.md": not found["report.md"] or (md_ours and not links["report.md"]),
            "chart.png": not found["chart.png"] or (json_ours and not links["chart.png"])}


def check_report_files(output_dir: str | Path) -> None:
    """Refuse an ``--output_dir`` holding a report.json/report.md/chart.png that compare did not write."""
    from whisper_ft.core.errors import WhisperFtError

    out = Path(output_dir)
    if not out.is_dir():
        return
    foreign = [name for name, ours in _ours(out).items() if not ours]
    if foreign:
        raise WhisperFtError(f"--output_dir {out} already holds {', '.join(foreign)}, which whisper-ft compare did "
                             "not write: choose another --output_dir (or move them away)")


def write_compare_report(report: CompareReport, output_dir: str | Path) -> dict[str, Path]:
    """Write ``report.json``, ``report.md`` and ``chart.png`` into ``output_dir``; returns their paths.
    Files of those names that compare did not write are never replaced (:func:`check_report_files`)."""
    from whisper_ft.workflows.compare.chart import write_chart

    out = Path(output_dir)
    check_report_files(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "report.json", "markdown": out / "report.md", "chart": out / "chart.png"}
    write_chart(report, paths["chart"])
    data = {"tool": TOOL, **report.to_dict()}
    _write_text(paths["json"], json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")
    _write_text(paths["markdown"], format_markdown(report, chart_name=paths["chart"].name))
    return paths
