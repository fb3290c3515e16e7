"""``whisper-ft transcribe``: transcribe (and pseudo-label) a whole corpus, in this process or on
Ray, resumable, into sharded records.

- :mod:`whisper_ft.scale.plan`: inputs (audio files, folders, globs, manifests, lists of paths) ->
  items with their identity (path, slice, size + mtime or content hash) -> shards planned over
  every input, so a resumed run decodes what is left exactly as an uninterrupted one would.
- :mod:`whisper_ft.scale.worker`: a shard's audio loading (a Ray task), and one worker's model
  opened once decoding a loaded shard into records: short clips packed, long files through the
  long-form decoder of ``infer-ct2``; errors with their reasons.
- :mod:`whisper_ft.scale.output`: the output folder (``part-NNNNN.jsonl`` records, ``errors.jsonl``,
  ``summary.json``, subtitles), every file atomic, recorded inputs known from it.
- :mod:`whisper_ft.scale.labels`: records -> training slices of at most 30 s -> filters (quality,
  speaking rate, agreement with a second model) -> a training manifest ``finetune`` reads.
- :mod:`whisper_ft.scale.engines`: the same worker in this process (``local``) or behind a Ray
  Data pipeline (audio-reading tasks, then a pool of model actors) on this machine or a cluster.
- :mod:`whisper_ft.scale.run`: the library entry point, :func:`~whisper_ft.scale.run.transcribe_corpus`.

Ray is optional (the ``scale`` extra) and imported only by the ``ray`` engine.
"""
