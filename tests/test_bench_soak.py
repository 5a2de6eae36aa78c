"""The soak's pieces (bench/soak.py, bench/soak_requests.py): argument checks, the slope, a process's figures from
/proc, and a request plan that covers every endpoint. The soak itself is a benchmark (`python -m bench soak`), not
a test: it runs for minutes to hours."""

import os
import threading

import pytest

from bench.soak import check_args, folder_mb, process_sample, slope_per_minute, summary
from bench.soak_requests import ROUND, file_urls, request_for

GOOD = dict(minutes=30, clients=3, steps=4, images=2, think=1.0, every=15.0)


@pytest.mark.parametrize(
    ("name", "value"),
    [("minutes", 0), ("minutes", 24 * 60 + 1), ("clients", 0), ("clients", 17), ("steps", 0), ("images", 5),
     ("think", -1), ("every", 0)],
)  # fmt: skip
def test_an_argument_out_of_range_is_refused_by_name(name, value):
    with pytest.raises(ValueError, match=f"--{name}"):
        check_args(**{**GOOD, name: value})
    check_args(**GOOD)  # and the defaults pass


def test_the_slope_is_the_least_squares_one_per_minute():
    assert slope_per_minute([(0, 100.0), (60, 102.0), (120, 104.0)]) == pytest.approx(2.0)
    # noise around a flat line: slope 0
    assert slope_per_minute([(0, 10.0), (30, 12.0), (60, 8.0), (90, 10.0)]) == pytest.approx(-0.8)
    assert slope_per_minute([(0, 5.0), (600, 5.0)]) == 0.0
    with pytest.raises(ValueError, match="points"):
        slope_per_minute([(0, 1.0)])
    with pytest.raises(ValueError, match="points"):
        slope_per_minute([(5, 1.0), (5, 2.0)])


def test_a_process_sample_reads_this_process_from_proc(tmp_path):
    (tmp_path / "a").write_bytes(b"x" * 2**20)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b").write_bytes(b"x" * 2**19)
    before = process_sample(os.getpid(), str(tmp_path))
    ballast = bytearray(64 * 2**20)  # 64 MB touched: the resident memory grows by about that
    ballast[::4096] = b"y" * len(ballast[::4096])
    started = threading.Event()
    thread = threading.Thread(target=lambda: (started.set(), threading.Event().wait(2)), daemon=True)
    thread.start()
    started.wait()
    with open(tmp_path / "a"):
        after = process_sample(os.getpid())
    assert before["folder_mb"] == pytest.approx(1.5) and "folder_mb" not in after
    assert after["rss_mb"] - before["rss_mb"] > 48
    assert after["threads"] >= before["threads"] + 1 and after["open_files"] >= before["open_files"] + 1
    assert folder_mb(str(tmp_path / "missing")) == 0


def test_the_summary_starts_after_the_warm_up():
    samples = [dict(t=60.0 * i, rss_mb=500.0 + (100 if i < 2 else 2 * i), threads=10, open_files=12, folder_mb=i,
                    answers=50 * i) for i in range(10)]  # fmt: skip
    figures = summary(samples, warm_up=120)
    assert figures["rss_mb"]["start"] == 504 and figures["rss_mb"]["end"] == 518
    assert figures["rss_mb"]["slope_per_minute"] == pytest.approx(2.0) and figures["rss_mb"]["before_warm_up"] == 600
    assert figures["rss_mb"]["slope_per_100_requests"] == pytest.approx(4.0)
    assert figures["threads"]["slope_per_minute"] == 0.0 and figures["folder_mb"]["max"] == 9


def test_a_round_of_requests_covers_every_endpoint_the_upsampler_on_and_off():
    plan = [request_for(0, i, steps=3, images=2) for i in range(len(ROUND))]
    assert {endpoint for endpoint, _ in plan} == {
        "/unconditional", "/text_to_image", "/image_to_image", "/inpaint", "/interpolate", "/compare", "/live"
    }  # fmt: skip
    upscale = {(endpoint, args[-3]) for endpoint, args in plan if endpoint in ("/unconditional", "/text_to_image")}
    assert upscale == {(e, on) for e in ("/unconditional", "/text_to_image") for on in (True, False)}
    seeds = [args[5] for endpoint, args in plan if endpoint == "/unconditional"]
    assert len(set(seeds)) == len(seeds)  # each request its own seed


def test_the_files_of_an_answer_are_found_wherever_they_sit():
    answer = (
        [{"image": {"url": "http://127.0.0.1:1/gradio_api/file=/a.png", "path": "/a.png"}, "caption": None}],
        '{"seed": 1}',
        1,
        [{"image": {"url": "http://127.0.0.1:1/gradio_api/file=/b.png"}}],
        {"url": "https://example.com/not-a-served-file"},
    )
    assert file_urls(answer) == [
        "http://127.0.0.1:1/gradio_api/file=/a.png",
        "http://127.0.0.1:1/gradio_api/file=/b.png",
    ]
