"""Data files shipped with whisper-ft (see README.md here for provenance)."""
