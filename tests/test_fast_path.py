"""The CTranslate2 path (infer-ct2, the server) never imports transformers: seconds of start-up.

Each check runs in a fresh interpreter (this test process has transformers loaded already).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import REPO


def _fresh_python(code: str, timeout: float = 300) -> dict:
    """Run ``code`` in a new interpreter; it prints one JSON line last, which is returned."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_language_table_is_transformers_table():
    pytest.importorskip("transformers")
    from transformers.models.whisper.tokenization_whisper import LANGUAGES as HF_LANGUAGES
    from transformers.models.whisper.tokenization_whisper import TO_LANGUAGE_CODE as HF_TO_CODE

    from whisper_ft.core.languages import LANGUAGES, TO_LANGUAGE_CODE, normalize_language

    assert list(LANGUAGES.items()) == list(HF_LANGUAGES.items())  # same codes, names and token order
    assert TO_LANGUAGE_CODE == dict(HF_TO_CODE)
    assert normalize_language("Mandarin") == normalize_language("<|zh|>") == "zh"


def test_bundled_preprocessor_config_is_what_transformers_writes():
    transformers = pytest.importorskip("transformers")
    from whisper_ft.models.bundled import _preprocessor_config

    ours = _preprocessor_config(80)
    theirs = transformers.WhisperFeatureExtractor(feature_size=80).to_dict()
    assert {k: theirs.get(k) for k in ours} == ours


def test_ctranslate2_backend_and_server_engine_import_without_transformers():
    loaded = _fresh_python("""
        import json, sys
        import whisper_ft.decoding.backend, whisper_ft.decoding.ct2, whisper_ft.decoding.batched
        import whisper_ft.decoding.options, whisper_ft.models.vocabulary, whisper_ft.models.generation
        import whisper_ft.serve.engine, whisper_ft.serve.app, whisper_ft.cli
        print(json.dumps({m: m in sys.modules for m in ("transformers", "torch")}))
    """)
    assert loaded == {"transformers": False, "torch": False}


def test_infer_ct2_and_server_models_never_import_transformers(tiny_ct2, make_wav):
    wav = make_wav("a.wav", 2.0)
    result = _fresh_python(f"""
        import json, sys, io, contextlib
        from whisper_ft.cli import main
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            try:
                main(["infer-ct2", {str(wav)!r}, "--model_path", {str(tiny_ct2)!r}, "--language", "zh",
                      "--beam_size", "1", "--cpu_threads", "1", "--format", "txt"])
            except SystemExit as exc:
                assert not exc.code, exc.code
        after_infer = "transformers" in sys.modules
        from whisper_ft.serve.engine import load_models
        load_models([{str(tiny_ct2)!r}], cpu_threads=1)
        print(json.dumps({{"infer": after_infer, "serve": "transformers" in sys.modules,
                          "decoded": bool(out.getvalue())}}))
    """)
    assert result == {"infer": False, "serve": False, "decoded": True}
