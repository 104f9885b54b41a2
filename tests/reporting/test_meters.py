"""reporting/meters.py: the batch clock tells warm-up from the steady rate; the host watch splits own memory from mapped
files."""

import mmap

import numpy as np

from mcqtune.reporting.meters import BatchClock, HostMemoryWatch


def test_host_memory_watch_tells_own_memory_from_mapped_files(tmp_path):
    """The host peak is split: memory the process allocates counts as anonymous, a mapped (read) file as
    file-backed -- the part the OS can drop, which a peak RSS alone would count as needed RAM. Measured against the
    watch's own first sample, after a collection: memory an earlier test frees meanwhile cannot hide the growth."""
    import gc

    path = tmp_path / "weights.bin"
    path.write_bytes(b"\1" * (96 * 2**20))
    gc.collect()
    with HostMemoryWatch(interval=0.01) as watch:
        start = dict(watch.peaks)  # the sample taken on entering
        block = np.ones(256 * 2**20 // 8)  # 256 MB of the process's own memory (another test's frees stay small)
        with path.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            assert sum(mapped[i] for i in range(0, len(mapped), 4096)) == len(mapped) // 4096  # touch every page
            watch.sample()
        del block
    grown = {name: watch.peaks[name] - start[name] for name in start}
    assert grown["RssAnon"] >= 0.2 and grown["RssFile"] >= 0.085, (grown, start)
    assert set(watch.summary()) == {"cpu_peak_anon_gb", "cpu_peak_file_backed_gb"}


def test_the_batch_clock_reports_the_first_batches_apart_from_the_steady_rate():
    import time

    clock = BatchClock()
    for size in (4, 4, 8, 8):
        assert clock.run(lambda rows: (time.sleep(0.002), len(rows))[1], list(range(size))) == size
    summary = clock.summary()
    assert summary["batches"] == 4 and summary["warmup_batches"] == 2 and summary["warmup_seconds"] >= 0
    assert 0 < summary["steady_questions_per_second"] <= 16 / 0.004


def fake_cuda(monkeypatch, reserved_gb: float, allocated_gb: float):
    """torch's peak counters as a GPU would report them (bytes), on a CPU-only machine."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "max_memory_reserved", lambda *a, **k: int(reserved_gb * 2**30))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda *a, **k: int(allocated_gb * 2**30))
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a, **k: None)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda *a, **k: None)


def test_gpu_peak_reads_both_counters_in_gib(monkeypatch):
    from mcqtune.reporting.meters import gpu_peak_gb, peak_memory_gb

    fake_cuda(monkeypatch, reserved_gb=10.894, allocated_gb=9.391)
    assert gpu_peak_gb() == {"reserved": 10.89, "allocated": 9.39}
    report = peak_memory_gb()
    assert (report["gpu_peak_reserved_gb"], report["gpu_peak_allocated_gb"]) == (10.89, 9.39)
    assert report["cpu_peak_rss_gb"] > 0


def test_gpu_peak_is_none_without_a_gpu(monkeypatch):
    import torch

    from mcqtune.reporting.meters import gpu_peak_gb, peak_memory_gb

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_peak_gb() is None
    assert set(peak_memory_gb()) == {"cpu_peak_rss_gb"}


def test_phase_peaks_keep_each_phase_and_the_run_peak_is_their_maximum(monkeypatch):
    """Training's phase timer records the peak of each phase from the same reader; the run peak is the largest."""
    from mcqtune.training.trainer import PhaseTimer

    timer = PhaseTimer()
    fake_cuda(monkeypatch, reserved_gb=9.43, allocated_gb=9.39)
    timer._close_phase("load")
    fake_cuda(monkeypatch, reserved_gb=13.1, allocated_gb=12.26)
    timer._close_phase("steps")
    fake_cuda(monkeypatch, reserved_gb=11.0, allocated_gb=10.0)
    timer._close_phase("steps")  # a later, smaller peak of the same phase keeps the larger one
    assert timer.peaks == {"load": 9.43, "steps": 13.1}
    assert timer.allocated == {"load": 9.39, "steps": 12.26}
    assert timer.run_peak_gb() == 13.1
