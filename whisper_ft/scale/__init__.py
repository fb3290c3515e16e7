"""``whisper-ft transcribe``: transcribe many hours of audio into a training manifest, on this
machine or across a Ray cluster.

- :mod:`whisper_ft.scale.plan`: inputs (audio files, folders, globs, manifests, lists of paths) ->
  items -> shards of a bounded number of files and minutes, with a fingerprint of the plan.
- :mod:`whisper_ft.scale.worker`: one worker's model (opened once) and the decoding of one shard:
  short clips packed into shared 30 s windows, long files through faster-whisper's batched VAD
  pipeline, each file's text turned into training records of at most 30 s.
- :mod:`whisper_ft.scale.output`: the output folder (marker, resume, shard files written
  atomically, the merged ``train.jsonl`` and ``summary.json``).
- :mod:`whisper_ft.scale.engines`: the same worker run in this process (``local``) or as a pool of
  Ray Data actors (``ray``); a shard is the unit of work, so both write the same files.
- :mod:`whisper_ft.scale.run`: the command's library entry point, :func:`transcribe_at_scale`.

Ray is optional (the ``scale`` extra) and imported only by the ``ray`` engine.
"""
