"""Shared utilities, the bottom layer: atomic file IO, Hub error mapping, argument checks, the level
vocabulary and text helpers. Nothing here imports from the layers above."""
