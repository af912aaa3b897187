"""Test helpers shipped with hubroute: a fake OpenAI-compatible inference provider and a background server."""
