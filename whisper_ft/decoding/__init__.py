"""Decoding: transformers generation, CTranslate2/faster-whisper, typed results."""
