"""Do a term list and a prompt help on unseen speech? The other AISHELL speaker, zero-shot.

Mines a term list from the training transcripts (``whisper-ft prepare terms``, top ``--top``), then
scores one model on the test manifest (the other speaker) with ``eval``'s decoder three ways, in one
process, one after the other: no prompt; ``--hotwords`` = the term list; ``--prompt`` = a punctuated
sentence in the domain's style. Each row: CER, S/D/I, and the change against no prompt with a paired
bootstrap 95% interval (utterances resampled; ``compare``'s method). Prints a Markdown table and
writes JSON (command, commit, date, machine) to benchmarks/results/prompt_terms.json.

    .venv/bin/python benchmarks/prompt_terms.py
    .venv/bin/python benchmarks/prompt_terms.py --model runs/my-ft/best --backend hf
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO.parent / "shared" / "aishell_sample"
DEFAULT_OUTPUT = REPO / "benchmarks" / "results" / "prompt_terms.json"
STYLE_PROMPT = "以下是普通话新闻的句子，包括房地产、汽车和奥运会。"


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="base", help="Model name (default: base, the bundled whisper-base).")
    ap.add_argument("--backend", default="ct2", choices=("ct2", "hf"))
    ap.add_argument("--train", default=str(SAMPLE / "train.jsonl"), help="Transcripts the terms are mined from.")
    ap.add_argument("--test", default=str(SAMPLE / "test.jsonl"), help="What is scored (default: the other speaker).")
    ap.add_argument("--top", type=int, default=50, help="Terms kept (default: %(default)s).")
    ap.add_argument("--beam_size", type=int, default=1)
    ap.add_argument("--output", default=str(DEFAULT_OUTPUT))
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    # the commit of the code that runs (read before it runs: a long run may outlive it)
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    sys.path.insert(0, str(REPO))
    from whisper_ft.data.terms import prepare_terms
    from whisper_ft.workflows.compare.stats import paired_bootstrap
    from whisper_ft.workflows.evaluate import EvalSettings, evaluate, load_eval_backend

    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    terms = prepare_terms([args.train], out.with_suffix(".terms.txt"), top=args.top)
    hotwords = " ".join(t.text for t in terms)
    runs = {"none": {}, "hotwords (term list)": {"hotwords": hotwords}, "prompt (style sentence)": {"prompt": STYLE_PROMPT}}
    base = EvalSettings(model=args.model, test_data=args.test, backend=args.backend, num_beams=args.beam_size,
                        show_progress=False)
    backend = load_eval_backend(base)
    reports = {}
    for name, extra in runs.items():
        t0 = time.perf_counter()
        reports[name] = (evaluate(EvalSettings(**{**base.__dict__, **extra}), backend=backend), time.perf_counter() - t0)
        print(f"{name}: {reports[name][0].score.summary()}", file=sys.stderr)
    ref = reports["none"][0].score
    rows = []
    for name, (report, seconds) in reports.items():
        s = report.score
        delta = None
        if name != "none":
            d = paired_bootstrap([u.errors for u in ref.utterances], [u.errors for u in s.utterances],
                                 [u.ref_len for u in ref.utterances], seed=0)
            delta = (d.delta, d.low, d.high)
        rows.append({"run": name, "cer": round(100 * s.error_rate, 2), "S": s.substitutions, "D": s.deletions,
                     "I": s.insertions, "delta": None if delta is None else [round(100 * x, 2) for x in delta],
                     "seconds": round(seconds, 1)})
    print(f"| {args.model} ({args.backend}, beam {args.beam_size}) on {Path(args.test).name} | CER % | S | D | I | "
          "Δ vs none [95% CI] | s |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        d = "(reference)" if r["delta"] is None else f"{r['delta'][0]:+.2f} [{r['delta'][1]:+.2f}, {r['delta'][2]:+.2f}]"
        print(f"| {r['run']} | {r['cer']:.2f} | {r['S']} | {r['D']} | {r['I']} | {d} | {r['seconds']} |")
    result = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "commit": commit,
              "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "machine": f"{platform.processor() or platform.machine()}, {__import__('os').cpu_count()} CPUs",
              "model": args.model, "backend": args.backend, "model_info": {k: v for k, v in backend.info.items() if k != "packing"}, "beam_size": args.beam_size, "terms": [t.text for t in terms],
              "style_prompt": STYLE_PROMPT, "rows": rows, "utterances": ref.n_utterances}
    out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
