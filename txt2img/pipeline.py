"""Text to image: a text-conditional UNet, its frozen CLIP text encoder and the noise schedule, sampled with guidance.

    pipe = TextToImagePipeline.from_pretrained("weights/txt2img")
    result = pipe(prompt="red heart", num_images=4, guidance_scale=5.0, seed=0)
    result.images  # list of PIL images; result.settings, result.warnings
    pipe("red heart", image=sketch, strength=0.6)  # from a picture; mask=..., variation_seed=...: as uncond's pipeline

The loop is `uncond.sampling.denoise`, the same as the unconditional pipeline's; what text brings is the model
function, `txt2img.guidance.guided_model_fn` (classifier-free guidance, both halves in one batched UNet call).
The folder layout is in `txt2img/folder.py`.

Seeds follow uncond's rule: x_T and DDPM's noise come from a CPU generator, so a seed gives the same
images on any device, and the same noise for every prompt (prompts change the images, not the noise).
Guided DDIM steps take eps from the clipped x_0 estimate (improved-diffusion's rule), so the extrapolated
guidance output cannot undo `clip_sample` through the noise direction.
"""

import json
import os
import time
from collections.abc import Generator
from dataclasses import dataclass, field

import torch
from PIL import Image

from txt2img.arguments import check_embeddings, check_prompts, repeat_embeddings, threshold_options
from txt2img.clip import CLIPEmbedder, TextEmbeddings, TextEncoder
from txt2img.default_style import image_prompts
from txt2img.folder import (
    CAPTIONS_NAME,
    NAMES_NAME,
    TEXT_ENCODER_FOLDER,
    UNET_FOLDER,
    save_text_encoder,
    text_encoder_location,
    write_pipeline_config,
)
from txt2img.guidance import check_guidance_args, guided_model_fn
from txt2img.rerank import best_of, candidate_scores, check_num_candidates, first_rows, load_ranker, per_candidate
from txt2img.unet import TextUNet
from uncond.captions import CaptionIndex
from uncond.edit import Mask, prepare_edit
from uncond.hub import local_folder
from uncond.images import to_pil
from uncond.noise import check_variation
from uncond.pipeline import (
    SCHEDULER_CONFIG_NAME,
    SampleOutput,
    check_edit_scheduler,
    check_sampling_args,
    default_device,
    describe,
    edit_settings,
    prepare_for_sampling,
    read_scheduler_config,
    sampling_stream,
)
from uncond.repaint import DEFAULT_JUMP_LENGTH, DEFAULT_JUMP_N_SAMPLE
from uncond.sampling import Callback, Step, make_scheduler, run_to_end, sample_dtype


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
    size, channels = unet.config.sample_size, unet.config.in_channels
    shape = (cond.hidden_states.shape[0], channels, size, size)
    model_fn = guided_model_fn(unet, cond, uncond, guidance_scale)
    was_training = unet.training
    unet.eval()
    stream = sampling_stream(
        model_fn,
        make_scheduler(scheduler, scheduler_config),
        shape,
        seed,
        next(unet.parameters()).device,
        num_inference_steps,
        dtype=sample_dtype(unet),
        eta=eta,
        use_clipped_model_output=guidance_scale != 1.0,
    )
    x_0, _ = run_to_end(stream)
    unet.train(was_training)
    return to_pil(x_0)


@dataclass
class TextSampleOutput(SampleOutput):
    """`SampleOutput` plus the warnings of the call (truncated prompts, unused arguments) and, for best of N, every
    candidate (candidate-major: candidate c of image b at c * B + b) with its CLIP cosine to its prompt, (B, N)."""

    warnings: list = field(default_factory=list)
    candidates: list = field(default_factory=list)  # PIL images; empty for num_candidates 1
    candidate_scores: list = field(default_factory=list)  # B lists of N cosines; empty for num_candidates 1


def read_json_list(directory: str, file: str) -> list | None:
    """A JSON list file of a model folder, or None where there is none."""
    path = os.path.join(directory, file)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


class TextToImagePipeline:
    """A text-conditional UNet, its frozen CLIP text encoder and the training noise schedule; call it with a prompt."""

    def __init__(
        self,
        unet: TextUNet,
        text_encoder: TextEncoder,
        scheduler_config: dict,
        name: str = "txt2img",
        captions: list | None = None,
        names: list | None = None,
        ranker: CLIPEmbedder | str | None = None,
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
        self.names = list(names or [])  # the emoji names among them, if listed: the text-space neighbours
        self._caption_features = None
        self._caption_index = None
        self._neighbours = []
        self._ranker = ranker  # best of N's CLIP (both towers), or the folder it is loaded from on first use

    @classmethod
    def from_pretrained(
        cls, path_or_hub_id: str, device=None, dtype: torch.dtype | None = None, ranker=None
    ) -> "TextToImagePipeline":
        """Load a pipeline folder (see `txt2img/folder.py`) or a hub id holding one; best of N ranks with `ranker`
        (a `CLIPEmbedder` or a CLIP folder), by default the CLIP folder of the text encoder."""
        directory = local_folder(path_or_hub_id)
        if not os.path.isdir(os.path.join(directory, UNET_FOLDER)):
            raise ValueError(
                f"path_or_hub_id {path_or_hub_id!r} has no {UNET_FOLDER}/ folder: not a text-to-image pipeline folder"
            )
        scheduler_config = read_scheduler_config(directory, path_or_hub_id)
        device = device or default_device()
        unet = TextUNet.from_pretrained(directory, subfolder=UNET_FOLDER)
        text_encoder = TextEncoder.from_pretrained(text_encoder_location(directory), device=device)
        captions, names = (read_json_list(directory, file) for file in (CAPTIONS_NAME, NAMES_NAME))
        unet.to(device=device, dtype=dtype or torch.float32)
        name = os.path.basename(os.path.normpath(str(path_or_hub_id)))
        ranker = ranker or text_encoder_location(directory)  # the shipped text encoder's CLIP has both towers
        return cls(unet, text_encoder, scheduler_config, name=name, captions=captions, names=names, ranker=ranker)

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
        """Up to `k` training captions for `prompt`, the model's vocabulary, for suggestions: those holding what
        is typed (any language, accents ignored: `uncond.captions.CaptionIndex`) first, then the nearest in the
        text encoder's space among the emoji names (`names.json`; else among all captions): "kitty" -> "cat face"."""
        if not self.captions or not isinstance(prompt, str) or not prompt.strip():
            return []
        if self._caption_index is None:  # once, on first use (the app warms it up in the background)
            self._caption_index = CaptionIndex(self.captions)
            # a few thousand names: about a second; encoding all ~110k captions would take minutes on a CPU
            self._neighbours = self.names or self.captions
            self._caption_features = torch.cat(
                [self.text_encoder.pooled(self._neighbours[i : i + 512]) for i in range(0, len(self._neighbours), 512)]
            )
        literal = self._caption_index.search(prompt, k)
        if len(literal) >= k:
            return literal
        similarity = self._caption_features @ self.text_encoder.pooled([prompt])[0]  # (N,) cosine in [-1, 1]
        nearest = [self._neighbours[i] for i in similarity.topk(min(2 * k, len(self._neighbours))).indices.tolist()]
        return list(dict.fromkeys(literal + nearest))[:k]

    def ranker(self) -> CLIPEmbedder:
        """The CLIP that ranks best-of-N candidates, loaded on first use; a ValueError where there is none."""
        if self._ranker is None:
            raise ValueError("num_candidates > 1 needs a CLIP to rank with: give the pipeline a ranker")
        if isinstance(self._ranker, str):
            self._ranker = load_ranker(self._ranker, self.device)
        return self._ranker

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    def encode(
        self, prompts: list, negatives: list, guided: bool, prompt_embeds=None, negative_prompt_embeds=None
    ) -> tuple[TextEmbeddings, TextEmbeddings | None]:
        """The prompts' embeddings and (when guided) the negative prompts', in one text-encoder call; embeddings
        handed in (`prompt_embeds`, `negative_prompt_embeds`, one row per prompt) are taken as they are."""
        if prompt_embeds is not None:
            check_embeddings("prompt_embeds", prompt_embeds, len(prompts))
            if not guided:
                return prompt_embeds, None
            if negative_prompt_embeds is None:
                return prompt_embeds, self.text_encoder.encode(negatives)
            return prompt_embeds, check_embeddings("negative_prompt_embeds", negative_prompt_embeds, len(prompts))
        if negative_prompt_embeds is not None:
            raise ValueError("negative_prompt_embeds needs prompt_embeds: give both, or the prompts as text")
        embeddings = self.text_encoder.encode(prompts + negatives if guided else prompts)
        p = len(prompts)
        cond = TextEmbeddings(embeddings.hidden_states[:p], embeddings.attention_mask[:p], embeddings.truncated[:p])
        if not guided:
            return cond, None
        return cond, TextEmbeddings(
            embeddings.hidden_states[p:], embeddings.attention_mask[p:], embeddings.truncated[p:]
        )

    def warnings(self, prompts, negatives, cond, uncond, negative_prompt) -> list:
        """What the caller should know: truncated prompts, a negative prompt that has no effect."""
        limit = self.text_encoder.max_length
        warnings = [
            f"prompt truncated to {limit} tokens: {text!r}" for text, cut in zip(prompts, cond.truncated) if cut
        ]
        if uncond is not None:
            warnings += [
                f"negative_prompt truncated to {limit} tokens: {text!r}"
                for text, cut in zip(negatives, uncond.truncated)
                if cut
            ]
        elif negative_prompt:
            warnings.append("negative_prompt has no effect at guidance_scale 1")
        return warnings

    def stream(
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
        callback: Callback | None = None,
        thresholding: bool = False,
        dynamic_thresholding_ratio: float = 0.995,
        sample_max_value: float = 1.5,
        image: Image.Image | None = None,
        strength: float | None = None,
        mask: Mask | None = None,
        jump_length: int = DEFAULT_JUMP_LENGTH,
        jump_n_sample: int = DEFAULT_JUMP_N_SAMPLE,
        variation_seed: int | None = None,
        variation_strength: float = 0.0,
        prompt_embeds: TextEmbeddings | None = None,
        negative_prompt_embeds: TextEmbeddings | None = None,
        num_candidates: int = 1,
        add_style: bool = True,
    ) -> Generator[Step | TextSampleOutput]:
        """Sample `num_images` images per prompt (prompt-major order), yielding each `Step`, the output last.

        prompt: a string or a list of strings; "" gives unconditional samples. negative_prompt: None (the empty
        prompt), a string, or one per prompt; it replaces the unconditional pass. guidance_scale: 0 unconditional,
        1 conditional only (one pass per step, negative_prompt unused), > 1 guided. Prompts longer than the
        tokenizer's limit are truncated and flagged in `settings["truncated"]` and `warnings`.
        `callback(step, t, x_t, pred_original_sample)` may return True to stop; same seed, same noise.
        thresholding: dynamic thresholding of the predicted x_0 (Saharia et al. 2022, section 2.3) in place of
        clipping: s = the `dynamic_thresholding_ratio` quantile of |x_0| per image, kept in [1, sample_max_value],
        and x_0 -> clip(x_0, -s, s) / s; DDPM, DDIM and DPM-Solver++ have it, Euler does not.
        image, strength, mask, jump_length, jump_n_sample, variation_seed, variation_strength: as the unconditional
        pipeline's (image to image, inpainting, variations). prompt_embeds, negative_prompt_embeds (diffusers' names):
        the embeddings to condition on in place of encoding the prompts (`prompt` then only labels the settings),
        one row per prompt; interpolation between prompts hands in mixed ones (`txt2img.interpolate`).
        num_candidates: best of N (`txt2img.rerank`): each image drawn N times in one batch, the candidate the CLIP
        ranks closest to its prompt kept; the steps show each image's first candidate. add_style: a prompt naming
        no style gets a colour style's words, one per image (`txt2img.default_style`); `settings["added_style"]`.
        """
        prompts, negatives = check_prompts(prompt, negative_prompt)
        num_candidates = check_num_candidates(num_candidates)
        if not isinstance(add_style, bool):
            raise ValueError(f"add_style must be True or False, got {add_style!r}")
        if negative_prompt_embeds is not None and prompt_embeds is None:  # checked before a style is added
            raise ValueError("negative_prompt_embeds needs prompt_embeds: give both, or the prompts as text")
        num_train_timesteps = self.scheduler_config.get("num_train_timesteps", 1000)
        num_images, num_inference_steps, eta, seed = check_sampling_args(
            num_images, num_inference_steps, scheduler, eta, seed, num_train_timesteps
        )
        guidance_scale, guidance_rescale = check_guidance_args(guidance_scale, guidance_rescale)
        variation_seed, variation_strength = check_variation(variation_seed, variation_strength)
        size, channels = self.unet.config.sample_size, self.unet.config.in_channels
        edit = prepare_edit(image, size, channels, strength, mask, jump_length, jump_n_sample)
        check_edit_scheduler(edit, scheduler)
        sampler = make_scheduler(
            scheduler,
            self.scheduler_config,
            **threshold_options(thresholding, dynamic_thresholding_ratio, sample_max_value),
        )
        started = time.perf_counter()
        guided = guidance_scale != 1.0
        # one prompt per image (B = P I, prompt-major), a colour style added where none is named
        too_long = lambda rows: self.text_encoder.tokenize(rows)[2]  # noqa: E731 (which rows would be cut)
        rows, added = image_prompts(prompts, num_images, add_style and prompt_embeds is None, too_long)
        if any(added):
            negatives = [n for n in negatives for _ in range(num_images)]
            cond, uncond = self.encode(rows, negatives, guided)
            warnings = list(dict.fromkeys(self.warnings(rows, negatives, cond, uncond, negative_prompt)))
        else:
            cond, uncond = self.encode(prompts, negatives, guided, prompt_embeds, negative_prompt_embeds)
            warnings = self.warnings(prompts, negatives, cond, uncond, negative_prompt)
            cond, uncond = (
                repeat_embeddings(cond, num_images),
                repeat_embeddings(uncond, num_images) if guided else None,
            )
        model_fn = guided_model_fn(
            self.unet,
            per_candidate(cond, num_candidates),  # (N B, L, D), candidate-major
            per_candidate(uncond, num_candidates) if guided else None,
            guidance_scale,
            guidance_rescale,
        )
        b = len(rows)
        stream = sampling_stream(
            model_fn,
            sampler,
            (num_candidates * b, channels, size, size),
            seed,
            self.device,
            num_inference_steps,
            callback,
            variation_seed=variation_seed,
            variation_strength=variation_strength,
            edit=edit,
            dtype=sample_dtype(self.unet),
            eta=eta,
            # DDIM, when guided: eps from the clipped x_0 (as improved-diffusion's DDIM always does); the guided
            # output extrapolates far past the data range, and an unclipped eps would carry back what clip_sample removed
            use_clipped_model_output=guided,
        )
        x_0, steps_done = yield from first_rows(stream, b)
        candidates, scores = [], None
        if num_candidates > 1:
            scores = candidate_scores(self.ranker(), x_0, rows, num_candidates)  # (B, N)
            candidates, x_0 = to_pil(x_0), best_of(x_0, scores)
        elapsed = time.perf_counter() - started
        settings = describe(
            self,
            prompt=prompt,
            negative_prompt=negative_prompt if negative_prompt is not None else "",
            guidance_scale=guidance_scale,
            guidance_rescale=guidance_rescale,
            truncated=any(cond.truncated) or (guided and any(uncond.truncated)),
            scheduler=scheduler,
            steps=num_inference_steps,
            eta=eta,
            seed=seed,
            thresholding=thresholding,
            num_candidates=num_candidates,
            **({"added_style": added} if any(added) else {}),
            **(
                {"dynamic_thresholding_ratio": dynamic_thresholding_ratio, "sample_max_value": sample_max_value}
                if thresholding
                else {}
            ),
        )
        settings.update(edit_settings(edit, variation_seed, variation_strength))
        settings["elapsed"] = round(elapsed, 3)
        planned = num_inference_steps if edit is None else edit.planned_steps(num_inference_steps)
        scores = [] if scores is None else [[round(v, 4) for v in row] for row in scores.tolist()]
        yield TextSampleOutput(to_pil(x_0), seed, planned, steps_done, elapsed, settings, warnings, candidates, scores)

    def __call__(self, prompt="", **kwargs) -> TextSampleOutput:
        """Sample images for a prompt: `stream` run to its end (the same arguments)."""
        *_, result = self.stream(prompt, **kwargs)
        return result
