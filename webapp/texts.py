"""The page's fixed texts: the introduction and the credits of the training data."""

DESCRIPTION = """# Emoji from noise
A small diffusion model, written from scratch, turns random noise into emoji in a few dozen steps.
**DDPM** removes the noise in up to 1000 small random steps; **DDIM** takes bigger steps, so 50 are enough: deterministic with eta 0, with fresh noise at each step (like DDPM) with eta 1.
Both are written from scratch here; **DPM-Solver++** and **Euler** are diffusers' samplers driven by the same loop.
"""
CREDITS = """**Credits.** The text-to-image model and its CLIP were trained on emoji rendered from seven sets: Noto
Color Emoji (Google, SIL Open Font License 1.1), Twemoji (Twemoji graphics by Twitter, Inc and other contributors,
CC BY 4.0), OpenMoji colour and line art ("All emojis designed by OpenMoji – the open-source emoji and icon project.
License: CC BY-SA 4.0") and Microsoft's Fluent Emoji flat, high contrast and 3D (MIT). The unconditional model was
trained on Noto Color Emoji. Captions: Unicode CLDR names and keywords. The README's Credits section lists every set,
its licence and attribution."""
