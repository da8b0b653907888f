"""Hugging Face `datasets` builders: the public entry point for making a corpus (loading one is plain Parquet)."""
