"""Loopback fakes of remote services (OpenAI, Anthropic, Hugging Face Hub) that speak their real wire protocols.

Test-only: they bind 127.0.0.1 on a free port and stop when their context manager exits.
"""
