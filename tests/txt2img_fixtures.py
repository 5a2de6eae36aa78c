"""Tiny, offline stand-ins for txt2img tests: a byte-level CLIP tokenizer and a random 2-layer CLIP text tower."""

import torch
from tokenizers.pre_tokenizers import ByteLevel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from txt2img.clip import TextEncoder
from txt2img.unet import TextUNet, TextUNetConfig

MAX_LENGTH = 16  # tokens, start and end included: prompts of more than ~14 letters are truncated
WIDTH = 32  # the text tower's hidden size


def tiny_tokenizer() -> CLIPTokenizer:
    """CLIP's tokenizer with a vocabulary of the 256 byte symbols (alone and word-final) and no merges: one token per letter."""
    alphabet = sorted(ByteLevel.alphabet())
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for symbol in alphabet + [s + "</w>" for s in alphabet]:
        vocab[symbol] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=MAX_LENGTH)


def tiny_text_encoder(seed: int = 0) -> TextEncoder:
    """A random CLIPTextModel of width 32 behind the tiny tokenizer."""
    tokenizer = tiny_tokenizer()
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=WIDTH,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=MAX_LENGTH,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
        projection_dim=WIDTH,
    )
    torch.manual_seed(seed)
    return TextEncoder(tokenizer, CLIPTextModel(config))


def save_tiny_clip(directory, seed: int = 0) -> str:
    """Write the tiny tokenizer and text tower to `directory` (a CLIP folder `TextEncoder.from_pretrained` loads)."""
    encoder = tiny_text_encoder(seed)
    encoder.tokenizer.save_pretrained(str(directory))
    encoder.text_model.save_pretrained(str(directory))
    return str(directory)


def tiny_clip_model(image_size: int = 8, patch_size: int = 4, seed: int = 0):
    """A random two-tower CLIPModel (width 32, one layer each) reading the tiny tokenizer's ids."""
    from transformers import CLIPConfig, CLIPModel

    tokenizer = tiny_tokenizer()
    text = dict(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=MAX_LENGTH,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )
    vision = dict(
        image_size=image_size,
        patch_size=patch_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
    )
    torch.manual_seed(seed)
    return CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16))


def tiny_ranker(seed: int = 0):
    """The tiny two-tower CLIP as best of N's ranker (`txt2img.clip.CLIPEmbedder`), built in memory."""
    from txt2img.clip import CLIPEmbedder

    return CLIPEmbedder(tiny_clip_model(seed=seed), tiny_tokenizer())


def save_tiny_clip_model(directory, image_size: int, patch_size: int, seed: int = 0) -> str:
    """Write the tiny two-tower CLIPModel and the tiny tokenizer to `directory`."""
    tiny_clip_model(image_size, patch_size, seed).save_pretrained(directory)
    tiny_tokenizer().save_pretrained(directory)
    return str(directory)


TINY_UNET = dict(
    sample_size=8,
    block_out_channels=(16, 32),
    layers_per_block=1,
    attention_resolutions=(8, 4),
    norm_num_groups=8,
    attention_head_dim=8,
    cross_attention_dim=WIDTH,
)


def tiny_unet(seed: int = 0, **overrides) -> TextUNet:
    """A random conditional UNet for 8x8 images reading the tiny text tower."""
    torch.manual_seed(seed)
    return TextUNet(TextUNetConfig(**{**TINY_UNET, **overrides})).eval()


def write_emoji_folder(data, names: list, styles: list, seed: int = 0) -> str:
    """An imagefolder of random 8x8 pictures, one per (name, style), with metadata.jsonl; returns its path."""
    import json

    from PIL import Image

    data.mkdir()
    generator = torch.Generator().manual_seed(seed)
    with open(data / "metadata.jsonl", "w") as meta:
        for i, (name, style) in enumerate((n, s) for n in names for s in styles):
            pixels = (torch.rand(8, 8, 3, generator=generator) * 255).to(torch.uint8).numpy()
            Image.fromarray(pixels).save(data / f"{i}.png")
            meta.write(json.dumps({"file_name": f"{i}.png", "text": name, "style": style}) + "\n")
    return str(data)
