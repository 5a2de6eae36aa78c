"""The page's fixed texts: the introduction and the credits of the training data."""

DESCRIPTION = """# Emoji from noise
A small diffusion model, written from scratch, turns random noise into emoji in a few dozen steps.
**DDPM** removes the noise in up to 1000 small random steps; **DDIM** takes bigger steps, so 50 are enough: deterministic with eta 0, with fresh noise at each step (like DDPM) with eta 1.
Both are written from scratch here; **DPM-Solver++** and **Euler** are diffusers' samplers driven by the same loop.
The models draw 32x32 pictures; a second diffusion model, the **upsampler**, then draws them at 128x128 from the small
picture (a cascade, as in Imagen: "How it works" shows it step by step). Untick **Upscale** to see the 32 px originals.
"""
CREDITS = """**Credits.** The text-to-image model and its CLIP were trained on emoji rendered from seven sets: Noto
Color Emoji (Google, SIL Open Font License 1.1), Twemoji (Twemoji graphics by Twitter, Inc and other contributors,
CC BY 4.0), OpenMoji colour and line art ("All emojis designed by OpenMoji – the open-source emoji and icon project.
License: CC BY-SA 4.0") and Microsoft's Fluent Emoji flat, high contrast and 3D (MIT). The upsampler was trained on the
same seven sets; the unconditional model on Noto Color Emoji. Captions: Unicode CLDR names and keywords. The README's Credits section lists every set,
its licence and attribution."""
CASCADE_TEXT = """**Upscaling (a cascade, as in Imagen).** The base model draws 32x32 pictures. A second diffusion model, the
upsampler, draws the 128x128 picture: its UNet sees x_t and, as extra input channels, the 32 px picture enlarged
(bicubic). During training that low-res input was itself noised to a random level, and the level was given to the
network (noise-conditioning augmentation, Ho et al. 2021): so at sampling a little noise on the base result (the
"Low-res noise level") hides its flaws, and the upsampler draws new detail instead of copying them. Below: the first
image's base result, that noised input, and the upsampler's x_t, step by step."""
