"""Model cards: the ``README.md`` every folder whisper-ft writes a model into carries.

A card is in the Hugging Face Hub's format: YAML metadata (``base_model``, ``language``,
``library_name``, ``tags``, the base's ``license`` where known, and a ``model-index`` with the run's
evaluation results and, when one was run, a compare's), then what a reader needs: how the model
was made (fine-tuned, merged, converted), the training data (utterances, hours, languages, where
it came from), the method and hyperparameters, the anti-forgetting settings and the results.

The facts behind a card are a plain dict (:func:`run_facts` from a run's ``finetune_config.json`` and
``metrics.json``), kept in the card itself as a JSON comment. That comment is also what marks a
card as generated: a later merge or conversion reads the source's facts from it and adds its step
(:func:`derived_facts`), ``whisper-ft card``/``push`` add eval and compare results, and
:func:`place_card` replaces only a generated card -- a ``README.md`` the user wrote is kept as it is.

The YAML is written by ``huggingface_hub``'s ``ModelCardData`` (a dependency of transformers, so
always installed), which is what the Hub itself parses.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

from whisper_ft.core.console import log

CARD_FILE = "README.md"
CARD_MARK = "<!-- whisper-ft:card "  # + facts as JSON + " -->": a card whisper-ft generated
_MARK_RE = re.compile(r"<!-- whisper-ft:card (\{.*\}) -->\s*$", re.S)
KNOWN_LICENSES = {"openai/whisper-": "apache-2.0"}  # hub id prefix -> licence of those weights
LIBRARIES = {"adapter": "peft", "model": "transformers", "merged": "transformers", "ctranslate2": "ctranslate2"}
ANTI_FORGETTING = ("replay_data", "replay_ratio", "kl_to_base", "empty_audio_ratio", "empty_audio_dir",
                   "max_general_regression")
HYPERPARAMETERS = ("learning_rate", "num_train_epochs", "max_steps", "warmup_steps", "per_device_train_batch_size",
                   "gradient_accumulation_steps", "weight_decay", "fp16", "bf16", "gradient_checkpointing", "seed")


# ---- facts ---------------------------------------------------------------------------------------


def license_of(base_model: str | None, local_path: str | None = None) -> str | None:
    """The base's licence: known hub families, else the ``license:`` of a local base's own card."""
    for prefix, licence in KNOWN_LICENSES.items():
        if base_model and base_model.startswith(prefix):
            return licence
    if local_path and (Path(local_path) / CARD_FILE).is_file():
        try:
            from huggingface_hub import ModelCard

            return ModelCard.load(Path(local_path) / CARD_FILE).data.to_dict().get("license")
        except Exception:  # noqa: BLE001 - a card we cannot parse just has no known licence
            return None
    return None


def _eval_rows(metrics: dict | None, sets: dict[str, str]) -> list[dict[str, Any]]:
    """The evaluation that made ``best/`` the best: one row per set and metric (in %)."""
    if not metrics:
        return []
    rows = []
    for key, value in metrics.items():
        m = re.fullmatch(r"eval_(?:(.+)_)?(cer|wer)", key)
        if not m or not isinstance(value, (int, float)):
            continue
        name = m.group(1) or "test"
        n = metrics.get(f"eval_{m.group(1)}_decoded" if m.group(1) else "eval_decoded")
        rows.append({"set": name, "manifest": sets.get(name), "metric": m.group(2), "value": round(100 * value, 2),
                     "n_utterances": n, "source": f"training evaluation at step {metrics.get('step')}"})
    return rows


def run_facts(run_config: dict, metrics: dict | None, *, kind: str, name: str) -> dict[str, Any]:
    """The facts of a fine-tuning run's ``best/`` (``kind``: adapter or model) from its run config
    (``finetune_config.json``, with its ``resolved`` part) and ``metrics.json``."""
    resolved = run_config.get("resolved", {})
    train, data, lora = run_config.get("train", {}), run_config.get("data", {}), run_config.get("lora", {})
    method = run_config.get("method") or ("adalora" if lora.get("use_adalora") else "lora")
    hyper = {k: train.get(k) for k in HYPERPARAMETERS if train.get(k) not in (None, False)}
    if method != "full":
        hyper.update({"lora_r": lora.get("r"), "lora_alpha": lora.get("alpha"), "lora_dropout": lora.get("dropout"),
                      "target_modules": ",".join(lora.get("target_modules") or [])})
        if lora.get("encoder_layers") is not None:
            hyper["lora_encoder_layers"] = lora["encoder_layers"]
        if method == "adalora":
            hyper["adalora_target_r"] = lora.get("adalora_target_r")
    if run_config.get("freeze_encoder"):
        hyper["freeze_encoder"] = True
    forgetting = {k: (train.get(k) if k in train else data.get(k)) for k in ANTI_FORGETTING}
    forgetting = {k: v for k, v in forgetting.items() if v not in (None, 0, 0.0, "")}
    sources = data.get("train_data")
    sets = {}
    for spec in [data.get("test_data")] if isinstance(data.get("test_data"), str) else data.get("test_data") or []:
        set_name, sep, path = str(spec).partition("=")
        sets[set_name if sep else "test"] = path if sep else set_name
    languages = list(resolved.get("train_languages") or {}) or ([data["language"]] if data.get("language") else [])
    base_local = resolved.get("base_model") or run_config.get("base_model")
    base = resolved.get("base_hub_id")
    return {
        "version": 1, "kind": kind, "name": name, "base_model": base, "base_model_as_named": base_local,
        "license": license_of(base, resolved.get("hf_path")), "languages": languages, "method": method,
        "task": data.get("task", "transcribe"), "hyperparameters": hyper, "anti_forgetting": forgetting,
        "data": {"utterances": resolved.get("train_utterances"), "hours": resolved.get("train_hours"),
                 "languages": resolved.get("train_languages") or {},
                 "sources": [sources] if isinstance(sources, str) else list(sources or [])},
        "eval": _eval_rows(metrics, sets), "compare": None,
        "steps": [f"fine-tuned from {base or base_local} with whisper-ft (--method {method}"
                  + (", --freeze_encoder" if run_config.get("freeze_encoder") else "")
                  + (f", best of step {metrics.get('step')} by {metrics.get('metric')}" if metrics else "") + ")"],
    }


def base_facts(name: str, *, kind: str, base_model: str | None, source: str) -> dict[str, Any]:
    """The facts of a model whisper-ft knows nothing more about (a base model converted, say)."""
    return {"version": 1, "kind": kind, "name": name, "base_model": base_model, "base_model_as_named": source,
            "license": license_of(base_model, source), "languages": [], "method": None, "task": "transcribe",
            "hyperparameters": {}, "anti_forgetting": {}, "data": {}, "eval": [], "compare": None,
            "steps": [f"from {base_model or source}"]}


def read_facts(folder: str | Path) -> dict[str, Any] | None:
    """The facts of a model folder: its generated card's, else a run's best/ files; None if unknown."""
    folder = Path(folder)
    facts = generated_facts(folder / CARD_FILE)
    if facts is not None:
        return facts
    config = _read_json(folder / "finetune_config.json")
    if config is None:
        return None
    kind = "adapter" if (folder / "adapter_config.json").is_file() else "model"
    return run_facts(config, _read_json(folder / "metrics.json"), kind=kind, name=_folder_name(folder))


def derived_facts(of_source: dict[str, Any] | None, *, kind: str, name: str, step: str, base_model: str | None = None,
                  source: str = "") -> dict[str, Any]:
    """The facts of a model made from another (merged, converted): the source's facts, this step
    added; without them, :func:`base_facts` of ``base_model`` (a hub id) / ``source`` (as named).
    The source's results move to ``earlier`` (shown, but not in this model's model-index: they were
    measured on the source)."""
    facts = (json.loads(json.dumps(of_source)) if of_source
             else base_facts(name, kind=kind, base_model=base_model, source=source))
    if facts.get("eval") or facts.get("compare"):  # measured on the source, not on this folder
        facts["earlier"] = [*facts.get("earlier", []), {"of": facts["name"], "eval": facts.get("eval") or [],
                                                        "compare": facts.get("compare")}]
        facts["eval"], facts["compare"] = [], None
    facts.update(kind=kind, name=name)
    facts["steps"] = [*facts.get("steps", []), step]
    return facts


def _folder_name(folder: Path) -> str:
    folder = folder.resolve()
    return f"{folder.parent.name}-{folder.name}" if folder.name in {"best", "last", "final"} else folder.name


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# ---- results added later: eval and compare reports -----------------------------------------------


def with_eval_report(facts: dict[str, Any], report: dict[str, Any]) -> dict[str, Any]:
    """Add the result of an ``eval`` report.json (one row)."""
    data = report.get("data", {})
    manifest = str(data.get("path", "test"))
    model = report.get("model") or {}
    how = " ".join(str(model[k]) for k in ("backend", "compute_type") if model.get(k))
    row = {"set": Path(manifest).stem, "manifest": manifest, "metric": report["metric"],
           "value": round(100 * float(report["error_rate"]), 2), "n_utterances": report.get("n_utterances"),
           "source": f"whisper-ft eval ({how})" if how else "whisper-ft eval", "config": how or None}
    facts = dict(facts)
    facts["eval"] = [r for r in facts.get("eval", []) if (r["set"], r["source"]) != (row["set"], row["source"])] + [row]
    return facts


def with_compare_report(facts: dict[str, Any], report: dict[str, Any], *, this_model: str | None = None) -> dict[str, Any]:
    """Add a ``compare`` report.json: its whole table, and which of its models is this one
    (``this_model``: a label or model name; default: the last model)."""
    models = report.get("models", [])
    if not models:
        return facts
    labels = [m["label"] for m in models]
    if this_model is None:
        index = len(models) - 1
    else:
        matches = [m["index"] for m in models if this_model in (m["label"], m["name"])]
        if not matches:
            from whisper_ft.core.errors import WhisperFtError

            raise WhisperFtError(f"--compare_model {this_model!r} is not a model of that compare report; choose "
                                 f"one of: {', '.join(labels)}")
        index = matches[0]
    rows = []
    for r in report.get("results", []):
        vs = r.get("vs_reference") or {}
        rows.append({"set": r["set"], "model": labels[r["model_index"]], "metric": r["metric"],
                     "value": round(100 * float(r["error_rate"]), 2), "n_utterances": r.get("n_utterances"),
                     "delta": vs.get("delta"), "low": vs.get("low"), "high": vs.get("high"),
                     "significant": vs.get("significant")})
    facts = dict(facts)
    facts["compare"] = {"reference": labels[0], "this_model": labels[index], "rows": rows}
    return facts


# ---- the card ------------------------------------------------------------------------------------


def generated_facts(path: str | Path) -> dict[str, Any] | None:
    """The facts kept in a card whisper-ft generated; None for no card or a user's own."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    m = _MARK_RE.search(text)
    if not m:
        return None
    try:
        return json.loads(m.group(1))
    except ValueError:
        return None


def is_generated(path: str | Path) -> bool:
    return generated_facts(path) is not None


def _pct(value) -> str:
    return "" if value is None else f"{value:.2f}"


def _model_index(facts: dict[str, Any]):
    from huggingface_hub import EvalResult

    task = {"task_type": "automatic-speech-recognition", "task_name": "Automatic Speech Recognition"}
    results = []
    for r in facts.get("eval", []):
        # the Hub groups results by dataset type/config/split (not name): the set's name is its type
        results.append(EvalResult(**task, dataset_type=r["set"], dataset_name=r["set"], metric_type=r["metric"],
                                  dataset_config=r.get("config"),
                                  metric_value=r["value"], metric_name=f"{r['metric'].upper()} (%)"))
    compare = facts.get("compare") or {}
    for r in compare.get("rows", []):
        if r["model"] == compare.get("this_model"):
            results.append(EvalResult(**task, dataset_type=r["set"], dataset_config="compare",
                                      dataset_name=f"{r['set']} (compare)",
                                      metric_type=r["metric"], metric_value=r["value"],
                                      metric_name=f"{r['metric'].upper()} (%)"))
    return results


def render_card(facts: dict[str, Any]) -> str:
    """The card's text: YAML metadata, the body, and the facts as a closing JSON comment."""
    from huggingface_hub import ModelCardData

    kind = facts["kind"]
    tags = ["whisper", "whisper-ft", "automatic-speech-recognition"]
    if facts.get("method"):
        tags.append("full-fine-tune" if facts["method"] == "full" else facts["method"])
    if kind == "ctranslate2":
        tags.append("faster-whisper")
    results = _model_index(facts)
    meta = ModelCardData(
        base_model=facts.get("base_model"), language=facts.get("languages") or None, license=facts.get("license"),
        library_name=LIBRARIES.get(kind), tags=tags, pipeline_tag="automatic-speech-recognition",
        model_name=facts["name"] if results else None, eval_results=results or None)
    parts = [f"---\n{meta.to_yaml()}\n---\n", f"# {facts['name']}\n", _summary(facts), _usage(facts)]
    parts += [section for section in (_data_section(facts), _method_section(facts), _results_section(facts),
                                      _compare_section(facts), _earlier_section(facts)) if section]
    facts_json = json.dumps(facts, ensure_ascii=False, sort_keys=True).replace(">", "\\u003e")
    parts.append(f"_This card was generated by whisper-ft; it is replaced when whisper-ft writes this folder again. "
                 f"Delete the line below to keep your edits._\n\n{CARD_MARK}{facts_json} -->\n")
    return "\n".join(parts)


def _summary(facts: dict[str, Any]) -> str:
    base = facts.get("base_model")
    named = f"[{base}](https://huggingface.co/{base})" if base else (facts.get("base_model_as_named") or "Whisper")
    tuned = " fine-tuned" if facts.get("method") else ""
    what = {"adapter": f"A LoRA adapter (peft) for {named}", "model": f"{named}{tuned}",
            "merged": f"{named}{tuned} (adapter merged)",
            "ctranslate2": f"A CTranslate2 (faster-whisper) export of {named}"}[facts["kind"]]
    steps = "\n".join(f"{i}. {step}" for i, step in enumerate(facts.get("steps", []), 1))
    return f"{what}, made with whisper-ft. How it was made:\n\n{steps}\n"


def _usage(facts: dict[str, Any]) -> str:
    kind = facts["kind"]
    language = (facts.get("languages") or [None])[0]
    lang = f', language="{language}"' if language else ""
    if kind == "ctranslate2":
        code = ("from faster_whisper import WhisperModel\n\n"
                f'model = WhisperModel("path/to/this/folder")\nsegments, info = model.transcribe("audio.wav"{lang})\n'
                'print("".join(s.text for s in segments))')
        cli = "whisper-ft infer-ct2 --model_path path/to/this/folder audio.wav"
    elif kind == "adapter":
        code = ("from peft import PeftModel\nfrom transformers import WhisperForConditionalGeneration, WhisperProcessor\n\n"
                f'base = WhisperForConditionalGeneration.from_pretrained("{facts.get("base_model") or "BASE"}")\n'
                'model = PeftModel.from_pretrained(base, "path/to/this/folder")\n'
                'processor = WhisperProcessor.from_pretrained("path/to/this/folder")')
        cli = "whisper-ft merge --lora_model path/to/this/folder   # then convert, eval, serve"
    else:
        code = ("from transformers import pipeline\n\n"
                'asr = pipeline("automatic-speech-recognition", model="path/to/this/folder")\n'
                f'print(asr("audio.wav"{", generate_kwargs={" + repr("language") + ": " + repr(language) + "}" if language else ""})["text"])')
        cli = "whisper-ft convert --model path/to/this/folder --quantization int8   # faster-whisper / serve"
    return f"## Use\n\n```python\n{code}\n```\n\n```bash\n{cli}\n```\n"


def _data_section(facts: dict[str, Any]) -> str:
    data = facts.get("data") or {}
    if not data.get("utterances"):
        return ""
    langs = ", ".join(f"{k} ({v})" for k, v in (data.get("languages") or {}).items())
    hours = data.get("hours")
    sources = ", ".join(f"`{s}`" for s in data.get("sources") or []) or "not recorded"
    return ("## Training data\n\n| utterances | hours | languages | source |\n|---|---|---|---|\n"
            f"| {data['utterances']} | {'' if hours is None else f'{hours:.2f}'} | {langs} | {sources} |\n")


def _method_section(facts: dict[str, Any]) -> str:
    if not facts.get("method"):
        return ""
    rows = "\n".join(f"| {k} | {v} |" for k, v in facts.get("hyperparameters", {}).items())
    out = f"## Method and hyperparameters\n\nMethod: `{facts['method']}`, task: {facts.get('task')}.\n\n"
    out += f"| setting | value |\n|---|---|\n{rows}\n"
    forgetting = facts.get("anti_forgetting") or {}
    out += "\n### Anti-forgetting\n\n"
    out += ("\n".join(f"- `--{k}` {v}" for k, v in forgetting.items()) if forgetting
            else "None (no replay, KL or non-speech training).") + "\n"
    return out


def _eval_table(rows: list[dict[str, Any]]) -> str:
    body = "\n".join(f"| {r['set']} | {r.get('manifest') or ''} | {r['metric'].upper()} | {_pct(r['value'])} | "
                     f"{r.get('n_utterances') or ''} | {r.get('source') or ''} |" for r in rows)
    return f"| set | manifest | metric | % | utterances | from |\n|---|---|---|---|---|---|\n{body}\n"


def _compare_table(compare: dict[str, Any]) -> str:
    lines = []
    for r in compare["rows"]:
        delta = "" if r.get("delta") is None else f"{100 * r['delta']:+.2f}"
        ci = "" if r.get("low") is None else f"[{100 * r['low']:+.2f}, {100 * r['high']:+.2f}]"
        mark = " (this model)" if r["model"] == compare.get("this_model") else ""
        significant = {True: "yes", False: "no"}.get(r.get("significant"), "")
        lines.append(f"| {r['set']} | {r['model']}{mark} | {r['metric'].upper()} {_pct(r['value'])} | {delta} | {ci} | "
                     f"{significant} |")
    return (f"Reference: {compare['reference']}.\n\n| set | model | error % | Δ points | 95% interval | significant |\n"
            "|---|---|---|---|---|---|\n" + "\n".join(lines) + "\n")


def _results_section(facts: dict[str, Any]) -> str:
    rows = facts.get("eval") or []
    return f"## Evaluation\n\n{_eval_table(rows)}" if rows else ""


def _compare_section(facts: dict[str, Any]) -> str:
    compare = facts.get("compare")
    return f"## Comparison (whisper-ft compare)\n\n{_compare_table(compare)}" if compare else ""


def _earlier_section(facts: dict[str, Any]) -> str:
    parts = []
    for earlier in facts.get("earlier") or []:
        text = f"### Measured on {earlier['of']}\n\n"
        if earlier.get("eval"):
            text += _eval_table(earlier["eval"]) + "\n"
        if earlier.get("compare"):
            text += _compare_table(earlier["compare"])
        parts.append(text)
    if not parts:
        return ""
    return ("## Results of the models this one was made from\n\n(Not this folder's own measurements: a merge or "
            "conversion can change them; evaluate this folder to know.)\n\n" + "\n".join(parts))


def place_card(folder: str | Path, facts: dict[str, Any], *, previous: str | Path | None = None) -> Path | None:
    """Write the generated card into ``folder`` (a staging folder about to replace ``previous``),
    unless a ``README.md`` the user wrote is there or in ``previous``: that one is kept (copied over)
    and never replaced. Returns the card's path, or None when the user's was kept."""
    folder = Path(folder)
    target = folder / CARD_FILE
    for existing in (target, Path(previous) / CARD_FILE if previous else None):
        if existing is not None and existing.is_file() and not is_generated(existing):
            if existing != target:
                shutil.copy2(existing, target)
            log(f"kept your {CARD_FILE} in {previous or folder} (not one whisper-ft generated): the generated model "
                "card is not written")
            return None
    target.write_text(render_card(facts), encoding="utf-8")
    return target
