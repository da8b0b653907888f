"""Verification: run PoT programs in a sandbox, extract CoT answers, compare with gold under named, versioned rules."""
