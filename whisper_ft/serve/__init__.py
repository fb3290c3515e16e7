"""``whisper-ft serve``: an OpenAI-compatible transcription server (FastAPI + uvicorn) and its web page.

- :mod:`whisper_ft.serve.engine`: served models and the batching decode workers;
- :mod:`whisper_ft.serve.uploads`: multipart uploads streamed into a private temp folder, size-capped;
- :mod:`whisper_ft.serve.responses`: OpenAI response formats (json, text, srt, vtt, verbose_json, SSE);
- :mod:`whisper_ft.serve.errors`: OpenAI's error JSON;
- :mod:`whisper_ft.serve.live`, :mod:`whisper_ft.serve.live_protocol`: live captions over a WebSocket
  (``/v1/realtime?intent=transcription``, OpenAI's Realtime transcription events);
- :mod:`whisper_ft.serve.app`: the FastAPI app and :func:`~whisper_ft.serve.app.run_server`.

Needs the ``serve`` extra (``pip install -e ".[serve]"``).
"""
