"""Evaluation of the trained models: `python -m evaluation uncond|txt2img ...` (see __main__.py)."""
