"""The benchmark: it runs end to end in its tiny configuration, and its diffusers models have our architecture and weights.

No speed is asserted here: speeds are ratios the benchmark prints (python -m bench), never timed tests.
"""

import ast
import json
import os
import urllib.request

import pytest
import torch
from txt2img_fixtures import TINY_UNET

from bench.__main__ import main as bench_main
from bench.measure import app_startup_seconds, served_app
from bench.models import (
    ROOT,
    count_parameters,
    shipped_txt2img_config,
    shipped_uncond_config,
    txt2img_pair,
    uncond_pair,
)
from txt2img.unet import TextUNetConfig
from uncond.conv import PACKED_CONV
from uncond.unet import UNetConfig
from webapp.live import LIVE_STEPS

UNCOND_CONFIGS = {
    "shipped": shipped_uncond_config,
    "tiny": lambda: UNetConfig(
        sample_size=16,
        block_out_channels=(8, 16, 16),
        layers_per_block=2,
        attention_resolutions=(8,),
        norm_num_groups=4,
        attention_head_dim=4,
    ),
    "no attention, one head": lambda: UNetConfig(
        sample_size=8,
        block_out_channels=(8, 16),
        attention_resolutions=(),
        mid_block_attention=False,
        attention_head_dim=None,
        norm_num_groups=4,
    ),
}
TXT2IMG_CONFIGS = {
    "shipped": shipped_txt2img_config,
    "tiny": lambda: TextUNetConfig(**TINY_UNET),
    "gelu, two layers, ff_mult 4": lambda: TextUNetConfig(
        **{**TINY_UNET, "ff_activation": "gelu", "transformer_layers_per_block": 2, "ff_mult": 4}
    ),
}


def test_tiny_benchmark_runs_and_writes_its_json(tmp_path):
    out = tmp_path / "bench.json"
    result = bench_main(["--tiny", "--out", str(out)])
    written = json.loads(out.read_text())
    assert written["tiny"] and written["device"] == "cpu" and written["matmul_peak_flops_per_s"] > 0
    rows = {(r["model"], r["what"], r["batch"]) for r in written["rows"]}
    for model in ("uncond", "txt2img"):
        assert {(model, "UNet forward", 1), (model, "DDIM-3 sampling", 1), (model, "training step", 2)} <= rows
    for row in written["rows"]:
        assert (
            row["ours_ms"] > 0
            and row["diffusers_ms"] > 0
            and row["speedup"] == pytest.approx(row["diffusers_ms"] / row["ours_ms"])
        )
        # CPU-second ratios only where they measure all the work: one intra-op thread
        assert ("speedup_cpu" in row) == (written["threads"] == 1)
        if "speedup_cpu" in row:
            assert row["speedup_cpu"] == pytest.approx(row["diffusers_cpu_ms"] / row["ours_cpu_ms"])
        if "sampling" in row["what"]:
            assert (
                row["max_pixel_difference"] <= 2
            )  # same weights, noise and schedule: the two libraries draw the same images
    forward = [r for r in written["rows"] if r["what"] == "UNet forward"]
    assert all(r["flops"] > 0 and r["ours_fraction_of_peak"] > 0 for r in forward)
    assert {"unet_forward_ms", "ours_ddim_step_ms", "diffusers_ddim_step_ms", "ours_ddim_fraction_of_step"} <= set(
        written["scheduler"]
    )
    # every convolution of our forwards took the packed oneDNN path, where this torch has it (uncond/conv.py)
    for row in forward:
        n = written["convolutions"][row["model"]]
        assert n > 0 and row["ours_convolutions"] == (
            {"packed": n, "plain": 0} if PACKED_CONV else {"packed": 0, "plain": n}
        )
    # the app's default requests, on the pipelines themselves: a preview every 5 steps, then the images
    for tab in ("uncond", "txt2img"):
        request = written["requests"][tab]
        assert request["num_images"] == 4 and request["scheduler"] == "ddim" and request["previews"] == 2
        assert 0 < request["first_preview_s"] < request["final_s"] and request["cpu_s"] > 0
    assert written["requests"]["uncond"]["eta"] == 1.0 and written["requests"]["txt2img"]["guidance_scale"] == 4.0
    # the cascade: both tabs' default requests alone and followed by the upsampler, side by side
    cascade = written["cascade"]
    for tab in ("uncond", "txt2img"):
        c = cascade[tab]
        # no order of the two times is asserted: a test times nothing (on busy cores a median of 2 can invert)
        assert c["base_s"] > 0 and c["cascade_s"] > 0 and c["ratio"] == pytest.approx(c["cascade_s"] / c["base_s"])
    assert cascade["forward"]["flops"] > 0 and cascade["forward"]["fraction_of_peak"] > 0
    assert any(check["target"].startswith("text-to-image request + upsampler") for check in written["targets"])
    live = written["requests"]["live"]  # live mode's picture: one image, LIVE_STEPS steps
    assert live["num_images"] == 1 and live["num_inference_steps"] == LIVE_STEPS and len(live["runs_s"]) == 5
    assert live["live_s"] > 0 and any(c["target"].startswith("live mode") for c in written["targets"])
    assert written["parameters"]["uncond"]["ratio"] == 1.0 and written["app"] is None
    assert all({"target", "value", "holds"} <= set(check) for check in written["targets"])
    assert result["rows"] == written["rows"]


@pytest.mark.parametrize("name", list(UNCOND_CONFIGS))
def test_uncond_pair_has_equal_architecture_and_weights(name):
    ours, theirs = uncond_pair(UNCOND_CONFIGS[name]())
    assert count_parameters(ours) == pytest.approx(count_parameters(theirs), rel=0.02)
    config = ours.config
    x = torch.randn(
        2, config.in_channels, config.sample_size, config.sample_size, generator=torch.Generator().manual_seed(0)
    )
    t = torch.tensor([3, 700])
    with torch.no_grad():
        torch.testing.assert_close(ours(x, t), theirs(x, t).sample, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", list(TXT2IMG_CONFIGS))
def test_txt2img_pair_has_equal_architecture_and_weights(name):
    ours, theirs = txt2img_pair(TXT2IMG_CONFIGS[name]())
    assert count_parameters(ours) == pytest.approx(count_parameters(theirs), rel=0.02)
    config = ours.config
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, config.in_channels, config.sample_size, config.sample_size, generator=generator)
    text = torch.randn(2, 5, config.cross_attention_dim, generator=generator)
    mask = torch.tensor([[True] * 5, [True, True, True, False, False]])
    t = torch.tensor([3, 700])
    with torch.no_grad():
        # diffusers' transformer GroupNorm has eps 1e-6 where ours has the config's 1e-5: close, not equal
        torch.testing.assert_close(
            ours(x, t, text, mask),
            theirs(x, t, encoder_hidden_states=text, encoder_attention_mask=mask).sample,
            atol=1e-3,
            rtol=1e-3,
        )


def test_shipped_configs_are_the_shipped_weights_architecture():
    with open(os.path.join(ROOT, "weights", "uncond", "config.json")) as f:
        shipped = json.load(f)
    assert all(
        getattr(shipped_uncond_config(), key) == (tuple(value) if isinstance(value, list) else value)
        for key, value in shipped.items()
        if key != "_class_name"
    )
    with open(os.path.join(ROOT, "weights", "txt2img", "unet", "config.json")) as f:
        shipped = json.load(f)
    assert all(
        getattr(shipped_txt2img_config(), key) == (tuple(value) if isinstance(value, list) else value)
        for key, value in shipped.items()
        if key != "_class_name"
    )


def test_bench_never_imports_the_app():
    # app.py loads every model and builds the page: the benchmark times the pipelines themselves
    folder = os.path.join(ROOT, "bench")
    for name in sorted(os.listdir(folder)):
        if name.endswith(".py"):
            with open(os.path.join(folder, name)) as f:
                tree = ast.parse(f.read())
            imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
            imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
            assert not any(m == "app" or (m or "").startswith(("app.", "webapp")) for m in imported), name


def test_time_alternately_gives_every_run_its_wall_and_cpu_seconds():
    from bench.measure import time_alternately

    calls = []
    work = {"a": lambda: calls.append("a") or sum(range(20000)), "b": lambda: calls.append("b") or sum(range(40000))}
    cpu = {}
    wall = time_alternately(work, repeats=3, cpu=cpu)
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"]  # one warm-up each, then the order rotates
    assert {k: len(v) for k, v in wall.items()} == {k: len(v) for k, v in cpu.items()} == {"a": 3, "b": 3}
    assert all(0 < c <= w + 1e-3 for k in work for c, w in zip(cpu[k], wall[k]))
    with pytest.raises(ValueError, match="repeats"):
        time_alternately(work, repeats=0)


FAKE_APP = """
import http.server, os, sys
if os.environ.get("FAKE_APP_FAILS"):
    sys.exit(3)
http.server.HTTPServer(("127.0.0.1", int(os.environ["GRADIO_SERVER_PORT"])), http.server.SimpleHTTPRequestHandler).serve_forever()
"""


def test_served_app_yields_once_the_page_answers_and_stops_the_app(tmp_path):
    (tmp_path / "app.py").write_text(FAKE_APP)
    with served_app(str(tmp_path), timeout=60) as (port, env, seconds):
        assert env["GRADIO_SERVER_PORT"] == str(port) and env["HF_HUB_OFFLINE"] == "1"
        assert 0 < seconds < 60
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
            assert response.status == 200
    with pytest.raises(OSError):  # stopped when the block ends
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5)


def test_served_app_names_an_app_that_exits_before_serving(tmp_path, monkeypatch):
    (tmp_path / "app.py").write_text(FAKE_APP)
    monkeypatch.setenv("FAKE_APP_FAILS", "1")
    with pytest.raises(RuntimeError, match="exited with 3 before serving"), served_app(str(tmp_path), timeout=60):
        pass
    ready, cpu = app_startup_seconds(str(tmp_path), timeout=60)
    assert ready is None and cpu >= 0
