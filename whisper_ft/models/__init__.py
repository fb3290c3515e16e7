"""Model names -> folders, loading, and the CTranslate2 <-> transformers bridge."""
