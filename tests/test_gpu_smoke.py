"""bench/gpu_smoke.py, the GPU job's first stage, checked on the emulated device: a script that first
runs on a GPU must not fail on its own mistakes."""

from __future__ import annotations

from test_bench_ab import bench_script


def test_the_smoke_checks_pass_on_the_emulated_device(emulated_cupy):
    smoke = bench_script("gpu_smoke")
    agreement = smoke.agreement(emulated_cupy)
    assert agreement["max_loss_rel_diff"] < 1e-4 and agreement["max_weight_abs_diff"] < 1e-4
    graph = smoke.graph_equals_eager(emulated_cupy)
    assert graph["max_weight_abs_diff"] == 0.0


def test_without_a_gpu_the_smoke_stage_says_so(capsys):
    smoke = bench_script("gpu_smoke")
    assert smoke.main([]) == 2
    assert "no GPU backend here" in capsys.readouterr().out
