"""Jinja templates of the model card of a router and of the CMRBench dataset card.

This folder is installed as the package ``hubroute._cards``; hubroute renders the templates with
huggingface_hub's ``ModelCard.from_template`` / ``DatasetCard.from_template``.
"""
