"""mixdistill: Mixed Distillation (CoT + PoT) corpora, built, verified, versioned and audited with SQL."""

__version__ = "0.1.0"
