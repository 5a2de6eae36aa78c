"""The benchmark's report: the issue's targets checked against the rows, and the printed table."""

from bench.cascade import cascade_lines


def targets(
    rows: list, scheduler: dict, app: dict | None, live: dict | None = None, live_page: dict | None = None
) -> list:
    """The issue's targets, each with the measured value and whether it holds."""
    checks = []
    for row in rows:
        if row["what"].startswith("DDIM") and row["batch"] in (1, 4) and row["variant"] == "eager":
            checks.append(
                {
                    "target": f"{row['model']} sampling at batch {row['batch']}: speedup >= 1.3",
                    "value": row["speedup"],
                    "holds": row["speedup"] >= 1.3,
                }
            )
        if row["what"] == "UNet forward" and row["batch"] == 8 and "ours_fraction_of_peak" in row:
            value = row["ours_fraction_of_peak"]
            checks.append(
                {
                    "target": f"{row['model']} UNet forward at batch 8: >= 65% of the matmul FLOP/s",
                    "value": value,
                    "holds": value >= 0.65,
                }
            )
    slowest = min(
        (r for r in rows if r["variant"] == "eager"), key=lambda r: r["speedup"]
    )  # the default path; compiled rows are reported
    checks.append(
        {
            "target": f"never slower than diffusers (slowest: {slowest['model']} {slowest['what']} batch {slowest['batch']})",
            "value": slowest["speedup"],
            "holds": slowest["speedup"] >= 1.0,
        }
    )
    fraction = scheduler["ours_ddim_fraction_of_step"]
    checks.append(
        {
            "target": "scheduler step < 1% of a sampling step (DDIM, batch 1)",
            "value": fraction,
            "holds": fraction < 0.01,
        }
    )
    if app is not None and app.get("startup_s") is not None:
        checks.append(
            {"target": "python app.py serves within 15 s", "value": app["startup_s"], "holds": app["startup_s"] < 15}
        )
    if live is not None:
        checks.append(
            {"target": "live mode: a picture within 1 s of the request", "value": live["live_s"],
             "holds": live["live_s"] < 1.0}
        )  # fmt: skip
    if live_page is not None:
        checks.append(
            {"target": "live mode in Chromium: the picture within 1 s of the last keystroke",
             "value": live_page["live_page_s"], "holds": live_page["live_page_s"] < 1.0}
        )  # fmt: skip
    return checks


def format_table(result: dict) -> str:
    """The speed rows as a Markdown table, then the FLOP/s, scheduler, app and target lines."""
    lines = [
        "| model | measurement | batch | variant | ours (ms) | diffusers (ms) | speedup | speedup, CPU seconds |",
        "|---|---|---:|---|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        by_cpu = f"{r['speedup_cpu']:.2f}x" if "speedup_cpu" in r else "-"
        lines.append(
            f"| {r['model']} | {r['what']} | {r['batch']} | {r['variant']} | {r['ours_ms']:.1f} | {r['diffusers_ms']:.1f} "
            f"| {r['speedup']:.2f}x | {by_cpu} |"
        )
    peak = result["matmul_peak_flops_per_s"]
    lines += [
        "",
        f"Matmul peak ({result['dtype']}, {result['device']}, {result['threads']} threads): {peak / 1e9:.1f} GFLOP/s at the start; "
        "each forward below is set against the same matmul timed alongside it",
    ]
    for r in result["rows"]:
        if "flops" in r:
            lines.append(
                f"{r['model']} UNet forward, batch {r['batch']}: {r['flops'] / 1e9:.3g} GFLOP; ours {r['ours_flops_per_s'] / 1e9:.1f} GFLOP/s "
                f"({r['ours_fraction_of_peak']:.0%} of the matmul's {r['matmul_flops_per_s'] / 1e9:.1f}), "
                f"diffusers {r['diffusers_flops_per_s'] / 1e9:.1f} GFLOP/s ({r['diffusers_fraction_of_peak']:.0%})"
            )
    for r in result["rows"]:
        if r.get("ours_convolutions"):
            c = r["ours_convolutions"]
            lines.append(
                f"{r['model']} UNet forward, batch {r['batch']}: our convolutions ran {c['packed']} on packed oneDNN weights, "
                f"{c['plain']} as nn.Conv2d"
            )
    s = result["scheduler"]
    lines.append(
        f"Scheduler step at batch 1: ours DDIM {s['ours_ddim_step_ms']:.3f} ms ({s['ours_ddim_fraction_of_step']:.2%} of a step), "
        f"DDPM {s['ours_ddpm_step_ms']:.3f} ms; diffusers DDIM {s['diffusers_ddim_step_ms']:.3f} ms, DDPM {s['diffusers_ddpm_step_ms']:.3f} ms; "
        f"UNet forward {s['unet_forward_ms']:.1f} ms"
    )
    for name, p in result["parameters"].items():
        lines.append(f"Parameters, {name}: ours {p['ours']:,}, diffusers {p['diffusers']:,} (ratio {p['ratio']:.4f})")
    app = result.get("app")
    if app:
        lines.append(
            f"App: `python app.py` serves after {app['startup_s']:.1f} s ({app['startup_cpu_s']:.1f} CPU s)"
            if app.get("startup_s")
            else "App: did not serve"
        )
    requests = result["requests"]
    if "load_s" in requests:
        lines.append(
            f"Loading both shipped pipelines (from_pretrained): {requests['load_s']:.2f} s ({requests['load_cpu_s']:.2f} CPU s)"
        )
    for tab in ("uncond", "txt2img"):
        a = requests[tab]
        first = "none" if a["first_preview_s"] is None else f"{a['first_preview_s']:.2f} s"
        lines.append(
            f"Request {tab} (app defaults: DDIM {a['num_inference_steps']} steps, {a['num_images']} images): "
            f"first preview {first}, images {a['final_s']:.2f} s ({a['cpu_s']:.1f} CPU s)"
        )
    lines += cascade_lines(result.get("cascade"))
    live = requests.get("live")
    if live:
        lines.append(
            f"Request live (txt2img, DDIM {live['num_inference_steps']} steps, {live['num_images']} image): "
            f"{live['live_s']:.2f} s median ({live['live_cpu_s']:.2f} CPU s) from the request to the picture"
        )
    live_page = requests.get("live_page")
    if live_page:
        lines.append(
            f"Live mode in Chromium (typing a key every {live_page['type_ms']} ms): {live_page['live_page_s']:.2f} s "
            "median from the last keystroke to the picture on the page"
        )
    lines.append("")
    for check in result["targets"]:
        lines.append(f"[{'holds' if check['holds'] else 'MISSES'}] {check['target']}: {check['value']:.3g}")
    return "\n".join(lines)
