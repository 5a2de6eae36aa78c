"""Text to image: a UNet conditioned on CLIP text embeddings through cross-attention, with classifier-free guidance."""
