"""Unconditional DDPM written from scratch: scheduler, UNet, sampling, training, data."""
