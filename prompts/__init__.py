"""The prompts as data: Jinja templates in English and Chinese, constraint phrasings, seeds and the evaluation tasks."""
