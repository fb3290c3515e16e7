"""``whisper-ft compare``: base vs fine-tuned on several test sets, before shipping a fine-tune.

- :mod:`~whisper_ft.workflows.compare.inputs`: ``--models`` / ``--test_data`` parsing and checks (before decoding)
- :mod:`~whisper_ft.workflows.compare.stats`: paired bootstrap interval of a change in CER/WER
- :mod:`~whisper_ft.workflows.compare.hallucination`: looping and over-long hypotheses, insertion rate
- :mod:`~whisper_ft.workflows.compare.nonspeech`: generated silence, noise and tones
- :mod:`~whisper_ft.workflows.compare.timestamps`: do timestamped segments still make sense
- :mod:`~whisper_ft.workflows.compare.runner`: runs it all (:func:`run_compare`) into a :class:`CompareReport`
- :mod:`~whisper_ft.workflows.compare.writers`, :mod:`~whisper_ft.workflows.compare.chart`: stdout table, report.json/.md, chart.png
"""
