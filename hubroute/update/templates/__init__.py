"""Package data of hubroute.update: the prompt templates (``prompt_templates.json``)."""
