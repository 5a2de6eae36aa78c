"""Text-to-image sampling with classifier-free guidance: the reverse process written out, one batched UNet call per step.

    pipe = TextToImagePipeline.from_pretrained("runs/txt2img")
    result = pipe("red heart", num_images=4, guidance_scale=5.0, seed=0)
    result.images  # list of PIL images; result.settings, result.warnings

A pipeline folder holds

    unet/                   TextUNet.save_pretrained (config.json + model.safetensors)
    text_encoder/           a CLIP folder: tokenizer files + CLIPTextModel (config.json + model.safetensors)
    scheduler_config.json   the training noise schedule
    pipeline.json           {"text_encoder": "text_encoder"}, or a path / hub id used instead of a copy,
                            e.g. {"text_encoder": "openai/clip-vit-base-patch32"}

Seeds follow uncond's rule: x_T and DDPM's noise come from a CPU generator, so a seed gives the same
images on any device, and the same noise for every prompt (prompts change the images, not the noise).
Guided DDIM steps take eps from the clipped x_0 estimate (improved-diffusion's rule), so the extrapolated
guidance output cannot undo `clip_sample` through the noise direction.
"""

import json
import math
import os
import shutil
import time
from dataclasses import dataclass, field

import torch

from txt2img.clip import TextEmbeddings, TextEncoder
from txt2img.unet import TextUNet, TextUNetConfig
from uncond.pipeline import (
    SCHEDULER_CONFIG_NAME,
    Callback,
    SampleOutput,
    check_sampling_args,
    default_device,
    initial_noise,
    make_scheduler,
    model_dtype,
    predicted_x0,
    prepare_for_sampling,
    to_pil,
)
from uncond.scheduler import DDIMScheduler

PIPELINE_CONFIG_NAME = "pipeline.json"
UNET_FOLDER = "unet"
CAPTIONS_NAME = "captions.json"  # the training captions, written by txt2img.train
TEXT_ENCODER_FOLDER = "text_encoder"


def classifier_free_guidance(
    cond: torch.Tensor, uncond: torch.Tensor, guidance_scale: float, guidance_rescale: float = 0.0
) -> torch.Tensor:
    """Classifier-free guidance, Ho & Salimans 2022 eq. 6 with s = 1 + w: uncond + s (cond - uncond); optional rescale of Lin et al. 2023."""
    guided = uncond + guidance_scale * (cond - uncond)  # (B, C, H, W)
    if guidance_rescale > 0:
        # Lin et al. 2023 eq. 14-16: match the guided output's per-sample std to the conditional one's,
        # then blend with the plain guided output by phi = guidance_rescale (applied to the model output, as diffusers does)
        dims = tuple(range(1, cond.ndim))
        rescaled = guided * (cond.std(dim=dims, keepdim=True) / guided.std(dim=dims, keepdim=True))
        guided = guidance_rescale * rescaled + (1.0 - guidance_rescale) * guided
    return guided


def check_guidance_args(guidance_scale: float, guidance_rescale: float) -> None:
    """guidance_scale: finite and >= 0 (0 unconditional, 1 no guidance, > 1 guidance); guidance_rescale in [0, 1]."""
    if (
        isinstance(guidance_scale, bool)
        or not isinstance(guidance_scale, (int, float))
        or not math.isfinite(guidance_scale)
        or guidance_scale < 0
    ):
        raise ValueError(f"guidance_scale must be a finite number >= 0, got {guidance_scale!r}")
    if (
        isinstance(guidance_rescale, bool)
        or not isinstance(guidance_rescale, (int, float))
        or not 0.0 <= guidance_rescale <= 1.0
    ):
        raise ValueError(f"guidance_rescale must be in [0, 1], got {guidance_rescale!r}")


def check_prompts(prompt, negative_prompt) -> tuple[list, list]:
    """Prompts as a list of strings, and one negative prompt per prompt ("" where none was given)."""
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if not isinstance(prompts, (list, tuple)) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise ValueError(f"prompt must be a string or a non-empty list of strings, got {prompt!r}")
    if negative_prompt is None:
        negatives = [""] * len(prompts)
    elif isinstance(negative_prompt, str):
        negatives = [negative_prompt] * len(prompts)
    elif (
        isinstance(negative_prompt, (list, tuple))
        and len(negative_prompt) == len(prompts)
        and all(isinstance(p, str) for p in negative_prompt)
    ):
        negatives = list(negative_prompt)
    else:
        raise ValueError(
            f"negative_prompt must be None, a string, or a list of {len(prompts)} strings (one per prompt), got {negative_prompt!r}"
        )
    return list(prompts), negatives


def repeat_embeddings(embeddings: TextEmbeddings, n: int) -> TextEmbeddings:
    """Each prompt's embeddings `n` times in a row: (P, L, D) -> (P n, L, D)."""
    return TextEmbeddings(
        embeddings.hidden_states.repeat_interleave(n, dim=0),
        embeddings.attention_mask.repeat_interleave(n, dim=0),
        [t for t in embeddings.truncated for _ in range(n)],
    )


@torch.inference_mode()
def sample(
    unet,
    scheduler,
    x_t: torch.Tensor,
    generator: torch.Generator,
    cond: TextEmbeddings,
    uncond: TextEmbeddings | None = None,
    guidance_scale: float = 1.0,
    guidance_rescale: float = 0.0,
    eta: float = 0.0,
    callback: Callback | None = None,
) -> tuple[torch.Tensor, int]:
    """Reverse process from x_T = `x_t` (B, C, H, W) for the text `cond` (B rows), guided away from `uncond`; returns (x_0, steps done)."""
    guided = guidance_scale != 1.0
    # DDIM: when guided, take eps from the clipped x_0 (as improved-diffusion's DDIM always does); the guided output
    # extrapolates far past the data range, and an unclipped eps would carry back what clip_sample removed from x_0
    extra = {"eta": eta, "use_clipped_model_output": guided} if isinstance(scheduler, DDIMScheduler) else {}
    if guided and uncond is None:
        raise ValueError("uncond embeddings are needed when guidance_scale != 1")
    device, dtype = x_t.device, model_dtype(unet, x_t.dtype)  # the UNet's dtype, for its inputs
    if guided:
        # one batch of 2B: the B unconditional (or negative) rows first, then the B conditional rows
        hidden_states = torch.cat([uncond.hidden_states, cond.hidden_states]).to(
            device=device, dtype=dtype
        )  # (2B, L, D)
        attention_mask = torch.cat([uncond.attention_mask, cond.attention_mask]).to(device)  # (2B, L)
    else:
        hidden_states = cond.hidden_states.to(device=device, dtype=dtype)  # (B, L, D)
        attention_mask = cond.attention_mask.to(device)  # (B, L)
    timesteps = scheduler.timesteps.to(device, non_blocking=True)  # once, not a host-to-device copy per step
    x_t = x_t * scheduler.init_noise_sigma  # 1 for DDPM/DDIM; sigma_max for Euler
    steps_done = 0
    for i, t in enumerate(scheduler.timesteps):
        # the UNet runs in its dtype; x_t, the guidance and the scheduler in x_t's (float32 from the pipeline)
        model_input = scheduler.scale_model_input(x_t, t).to(dtype)  # the scaling is the identity for DDPM/DDIM
        if guided:
            model_output = unet(torch.cat([model_input, model_input]), timesteps[i], hidden_states, attention_mask).to(
                x_t.dtype
            )  # (2B, C, H, W)
            out_uncond, out_cond = model_output.chunk(2)
            model_output = classifier_free_guidance(out_cond, out_uncond, guidance_scale, guidance_rescale)
        else:
            model_output = unet(model_input, timesteps[i], hidden_states, attention_mask).to(x_t.dtype)
        out = scheduler.step(model_output, t, x_t, generator=generator, **extra)
        x_t = out.prev_sample
        steps_done = i + 1
        pred_original_sample = predicted_x0(out, x_t)
        if callback is not None and callback(i, int(t), x_t, pred_original_sample):
            # stopped early: the best estimate of x_0 so far is the model's prediction
            return pred_original_sample, steps_done
    return x_t, steps_done


def sample_images(
    unet,
    scheduler_config: dict,
    cond: TextEmbeddings,
    uncond: TextEmbeddings,
    guidance_scale: float,
    num_inference_steps: int = 50,
    scheduler: str = "ddim",
    eta: float = 0.0,
    seed: int = 0,
) -> list:
    """One PIL image per row of `cond`, from a fresh scheduler (used by training for its sample grids)."""
    device = next(unet.parameters()).device
    sampler = make_scheduler(scheduler, scheduler_config)
    sampler.set_timesteps(num_inference_steps)
    size, channels = unet.config.sample_size, unet.config.in_channels
    x_t, generator = initial_noise((cond.hidden_states.shape[0], channels, size, size), seed, device)
    was_training = unet.training
    unet.eval()
    x_0, _ = sample(unet, sampler, x_t, generator, cond, uncond, guidance_scale, 0.0, eta)
    unet.train(was_training)
    return to_pil(x_0)


@dataclass
class TextSampleOutput(SampleOutput):
    """`SampleOutput` plus the warnings of the call (truncated prompts, unused arguments)."""

    warnings: list = field(default_factory=list)


# ---- the pipeline folder ----


def save_text_encoder(text_encoder: TextEncoder, directory: str) -> None:
    """Write the tokenizer and the text tower (safetensors) to `directory`, via a temporary folder renamed at the end."""
    tmp = directory.rstrip("/") + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    text_encoder.tokenizer.save_pretrained(tmp)
    text_encoder.text_model.save_pretrained(tmp, safe_serialization=True)
    shutil.rmtree(directory, ignore_errors=True)
    os.replace(tmp, directory)


def write_pipeline_config(directory: str, text_encoder: str = TEXT_ENCODER_FOLDER) -> None:
    """pipeline.json: where the text encoder is (the copy in text_encoder/, or a path / hub id)."""
    with open(os.path.join(directory, PIPELINE_CONFIG_NAME), "w") as f:
        json.dump({"_class_name": "TextToImagePipeline", "text_encoder": text_encoder}, f, indent=2)


def text_encoder_location(directory: str) -> str:
    """The text encoder of a pipeline folder: a folder inside it, a folder elsewhere, or a hub id."""
    reference = TEXT_ENCODER_FOLDER
    config_path = os.path.join(directory, PIPELINE_CONFIG_NAME)
    if os.path.isfile(config_path):
        with open(config_path) as f:
            reference = json.load(f).get("text_encoder", TEXT_ENCODER_FOLDER)
    inside = os.path.join(directory, reference)
    return inside if os.path.isdir(inside) else reference


class TextToImagePipeline:
    """A text-conditional UNet, its frozen CLIP text encoder and the training noise schedule; call it with a prompt."""

    def __init__(
        self,
        unet: TextUNet,
        text_encoder: TextEncoder,
        scheduler_config: dict,
        name: str = "txt2img",
        captions: list | None = None,
    ):
        if unet.config.cross_attention_dim != text_encoder.hidden_size:
            raise ValueError(
                f"text_encoder width {text_encoder.hidden_size} does not match the UNet's cross_attention_dim {unet.config.cross_attention_dim}"
            )
        self.unet = prepare_for_sampling(unet)
        self.text_encoder = text_encoder
        self.scheduler_config = dict(scheduler_config)
        self.name = name
        self.captions = list(captions or [])  # the training captions, if the model folder lists them
        self._caption_features = None

    @classmethod
    def from_pretrained(
        cls, path_or_hub_id: str, device=None, dtype: torch.dtype | None = None
    ) -> "TextToImagePipeline":
        """Load a pipeline folder (see the module docstring) or a hub id holding one."""
        from uncond.convert import _download

        directory = path_or_hub_id if os.path.isdir(path_or_hub_id) else _download(path_or_hub_id)
        if not os.path.isdir(os.path.join(directory, UNET_FOLDER)):
            raise ValueError(
                f"path_or_hub_id {path_or_hub_id!r} has no {UNET_FOLDER}/ folder: not a text-to-image pipeline folder"
            )
        device = device or default_device()
        unet = TextUNet.from_pretrained(directory, subfolder=UNET_FOLDER)
        text_encoder = TextEncoder.from_pretrained(text_encoder_location(directory), device=device)
        scheduler_config = {}
        if os.path.isfile(os.path.join(directory, SCHEDULER_CONFIG_NAME)):
            with open(os.path.join(directory, SCHEDULER_CONFIG_NAME)) as f:
                scheduler_config = json.load(f)
        captions = None
        if os.path.isfile(os.path.join(directory, CAPTIONS_NAME)):
            with open(os.path.join(directory, CAPTIONS_NAME)) as f:
                captions = json.load(f)
        unet.to(device=device, dtype=dtype or torch.float32)
        return cls(
            unet,
            text_encoder,
            scheduler_config,
            name=os.path.basename(os.path.normpath(str(path_or_hub_id))),
            captions=captions,
        )

    @classmethod
    def untrained(cls, text_encoder_path: str, device=None) -> "TextToImagePipeline":
        """A freshly initialised UNet on a trained text encoder (draws noise): what the app shows before trained weights exist."""
        device = device or default_device()
        text_encoder = TextEncoder.from_pretrained(text_encoder_path, device=device)
        config = TextUNetConfig(
            block_out_channels=(32, 64, 128, 128),
            layers_per_block=1,
            attention_resolutions=(8, 4),
            norm_num_groups=8,
            cross_attention_dim=text_encoder.hidden_size,
        )
        return cls(TextUNet(config).to(device), text_encoder, {"beta_schedule": "squaredcos_cap_v2"}, name="untrained")

    def save_pretrained(
        self, directory: str, text_encoder_reference: str | None = None, dtype: torch.dtype | None = None
    ) -> None:
        """Write the pipeline folder; with `text_encoder_reference` (a path or hub id) the text encoder is referenced, not copied."""
        os.makedirs(directory, exist_ok=True)
        self.unet.save_pretrained(os.path.join(directory, UNET_FOLDER), dtype=dtype)
        with open(os.path.join(directory, SCHEDULER_CONFIG_NAME), "w") as f:
            json.dump(self.scheduler_config, f, indent=2)
        if text_encoder_reference is None:
            save_text_encoder(self.text_encoder, os.path.join(directory, TEXT_ENCODER_FOLDER))
        write_pipeline_config(directory, text_encoder_reference or TEXT_ENCODER_FOLDER)

    def closest_captions(self, prompt: str, k: int = 5) -> list:
        """The `k` training captions nearest to `prompt` in the text encoder's space: the model's vocabulary, for suggestions."""
        if not self.captions or not isinstance(prompt, str) or not prompt.strip():
            return []
        if self._caption_features is None:  # once, on first use (a few thousand short captions: about a second)
            self._caption_features = torch.cat(
                [self.text_encoder.pooled(self.captions[i : i + 256]) for i in range(0, len(self.captions), 256)]
            )
        similarity = self._caption_features @ self.text_encoder.pooled([prompt])[0]  # (N,) cosine in [-1, 1]
        # typed words found in a caption count first ("cats" -> "cat face"): a small BPE knows few unseen words
        words = [word.rstrip("s") or word for word in prompt.lower().split()]
        overlap = torch.tensor(
            [sum(word in caption.lower() for word in words) for caption in self.captions], dtype=similarity.dtype
        )
        score = overlap * 2 + similarity
        return [self.captions[i] for i in score.topk(min(k, len(self.captions))).indices.tolist()]

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    def __call__(
        self,
        prompt="",
        negative_prompt=None,
        num_images: int = 1,
        num_inference_steps: int = 50,
        scheduler: str = "ddim",
        eta: float = 0.0,
        guidance_scale: float = 5.0,
        guidance_rescale: float = 0.0,
        seed: int = 0,
        device=None,
        dtype: torch.dtype | None = None,
        callback: Callback | None = None,
    ) -> TextSampleOutput:
        """Sample `num_images` images per prompt (prompt-major order); same seed, same noise.

        prompt: a string or a list of strings; "" gives unconditional samples. negative_prompt: None (the empty
        prompt), a string, or one per prompt; it replaces the unconditional pass. guidance_scale: 0 unconditional,
        1 conditional only (one pass per step, negative_prompt unused), > 1 guided. Prompts longer than the
        tokenizer's limit are truncated and flagged in `settings["truncated"]` and `warnings`.
        `callback(step, t, x_t, pred_original_sample)` may return True to stop.
        """
        prompts, negatives = check_prompts(prompt, negative_prompt)
        sampler = make_scheduler(scheduler, self.scheduler_config)
        check_sampling_args(num_images, num_inference_steps, eta, seed, sampler.config.num_train_timesteps)
        check_guidance_args(guidance_scale, guidance_rescale)
        if device is not None or dtype is not None:
            prepare_for_sampling(self.unet.to(device=device or self.device, dtype=dtype or self.dtype))
            self.text_encoder.text_model.to(device=self.device)
        started = time.perf_counter()
        guided = guidance_scale != 1.0
        # one text-encoder call for the prompts and (when guided) the negative prompts
        embeddings = self.text_encoder.encode(prompts + negatives if guided else prompts)
        p = len(prompts)
        cond = TextEmbeddings(embeddings.hidden_states[:p], embeddings.attention_mask[:p], embeddings.truncated[:p])
        uncond = (
            TextEmbeddings(embeddings.hidden_states[p:], embeddings.attention_mask[p:], embeddings.truncated[p:])
            if guided
            else None
        )
        warnings = [
            f"prompt truncated to {self.text_encoder.max_length} tokens: {text!r}"
            for text, cut in zip(prompts, cond.truncated)
            if cut
        ]
        if guided:
            warnings += [
                f"negative_prompt truncated to {self.text_encoder.max_length} tokens: {text!r}"
                for text, cut in zip(negatives, uncond.truncated)
                if cut
            ]
        elif negative_prompt:
            warnings.append("negative_prompt has no effect at guidance_scale 1")

        sampler.set_timesteps(num_inference_steps)
        size, channels = self.unet.config.sample_size, self.unet.config.in_channels
        x_t, generator = initial_noise(
            (p * num_images, channels, size, size), seed, self.device
        )  # float32 whatever the UNet's dtype
        x_0, steps_done = sample(
            self.unet,
            sampler,
            x_t,
            generator,
            repeat_embeddings(cond, num_images),
            repeat_embeddings(uncond, num_images) if guided else None,
            guidance_scale,
            guidance_rescale,
            eta,
            callback,
        )
        images = to_pil(x_0)
        elapsed = time.perf_counter() - started
        settings = {
            "model": self.name,
            "prompt": prompt,
            "negative_prompt": negative_prompt if negative_prompt is not None else "",
            "guidance_scale": guidance_scale,
            "guidance_rescale": guidance_rescale,
            "truncated": any(cond.truncated) or (guided and any(uncond.truncated)),
            "scheduler": scheduler,
            "steps": num_inference_steps,
            "eta": eta,
            "seed": seed,
            "size": size,
            "device": str(self.device),
            "dtype": str(self.dtype).replace("torch.", ""),
            "elapsed": round(elapsed, 3),
        }
        return TextSampleOutput(images, seed, num_inference_steps, steps_done, elapsed, settings, warnings)
