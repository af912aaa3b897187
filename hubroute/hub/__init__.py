"""Hugging Face Hub integration: downloads, error mapping, model cards, crawling new models."""
