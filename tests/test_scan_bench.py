"""benchmarks/scan_bench.py: one short run end to end (every figure in its JSON, each sane), and the long clip's
stream-copy repetition."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from deepscan.media.synthetic import moving_portrait_clip
from deepscan.media.video import iter_frames, probe_video

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "scan_bench.py"


def _bench_module():
    spec = importlib.util.spec_from_file_location("scan_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_repeated_clip_is_one_stream_of_every_copy(tmp_path: Path) -> None:
    clip = moving_portrait_clip(tmp_path / "clip.mp4", seconds=1.0, fps=25, size=(160, 120), faces=1)
    long = _bench_module().repeat_clip(clip, tmp_path / "long.mp4", 3)
    info = probe_video(long)
    assert info.frame_count == 75 and info.duration_s == pytest.approx(3.0)
    once = [frame.time_s for frame in iter_frames(clip, fps=2)]
    thrice = [frame.time_s for frame in iter_frames(long, fps=2)]  # decodes every frame; raises if broken
    assert thrice == pytest.approx([turn + time_s for turn in range(3) for time_s in once])


@pytest.mark.slow
def test_short_run_writes_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    # eager only in (c): the exported runtimes' first export alone takes minutes on a 2-core machine.
    run = subprocess.run(
        [sys.executable, str(BENCH), "--seconds", "2", "--long-seconds", "3", "--runtimes", "eager",
         "--rounds", "2", "--json", str(out)],
        capture_output=True, text=True, timeout=600, check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(out.read_text())

    for key in ("pipeline_efficiency", "speedup_vs_naive", "peak_rss_mb", "peak_rss_mb_long",
                "rss_growth_long_vs_short", "faces_per_frame"):
        assert math.isfinite(report[key]), key
    for key in ("pipeline_efficiency", "speedup_vs_naive", "peak_rss_mb", "peak_rss_mb_long"):
        assert report[key] > 0, key
    assert 100 < report["peak_rss_mb"] < 16_000 and 100 < report["peak_rss_mb_long"] < 16_000
    assert report["faces_per_frame"] == 2.0  # the clip's two faces, found in every sampled frame
    assert set(report["rates_frames_per_s"]) == {"a_decode", "b_detect_guided", "b_detect_tiles", "c_forward",
                                                 "d_scan", "e_naive"}
    assert set(report["rates_faces_per_s"]) == {"c_forward", "d_scan", "e_naive"}
    assert all(rate > 0 and math.isfinite(rate) for rates in ("rates_frames_per_s", "rates_faces_per_s")
               for rate in report[rates].values())
    rates = report["rates_frames_per_s"]
    assert report["pipeline_efficiency"] == pytest.approx(
        rates["d_scan"] / min(rates["a_decode"], rates["b_detect_guided"], rates["c_forward"]))
    assert report["speedup_vs_naive"] == pytest.approx(rates["d_scan"] / rates["e_naive"])
    assert report["slowest_stage"] in ("decode", "detection", "forward")
    assert set(report["targets"]) == {"pipeline_efficiency_ge_0.9", "speedup_vs_naive_ge_3", "rss_long_within_10pct"}

    # 2 s at 2 fps: the same 4 sampled frames for decode, detection, the scan and the naive loop.
    assert report["decode"]["sampled"]["frames"] == report["scan"]["frames"] == report["naive"]["frames"] == 4
    assert report["detection"]["guided"]["frames"] == report["detection"]["tiles"]["frames"] == 4
    assert report["scan"]["faces"] == report["naive"]["faces"] == 8
    assert report["forward"]["scan"]["batch_size"] == report["scan_options"]["batch_size"]
    assert report["forward"]["eager"]["faces_per_s"] > 0
    assert report["long_clip"]["duration_s"] == pytest.approx(3.0, abs=0.05)
    assert report["rss"]["long"]["frames_scanned"] == 6 and report["rss"]["short"]["frames_scanned"] == 4
    assert all(value >= 0 for value in report["one_time"].values())
    assert 0 < report["cpu_bound"]["best_possible_efficiency"] <= 1
    assert "scan" in run.stdout and "pipeline_efficiency" in run.stdout
