"""What a run measures about itself, for its report: seconds per answered batch and peak host / GPU memory.

``BatchClock`` tells the first batches (kernel compilation for new shapes, the longest prompts) from the steady
rate; ``HostMemoryWatch`` splits the host peak into the process's own memory and mapped weight files, which a
peak RSS alone would count as needed RAM.
"""

from __future__ import annotations

import time
from pathlib import Path


class BatchClock:
    """Seconds per answered batch, so the report can tell the first batches (kernel compilation for new
    shapes, the longest prompts) from the steady rate. Each batch ends with its results on the host, so
    the GPU work is inside its time."""

    WARMUP_BATCHES = 2

    def __init__(self):
        self.batches: list[tuple[int, float]] = []

    def run(self, compute, batch: list[int]):
        started = time.perf_counter()
        result = compute(batch)
        self.batches.append((len(batch), time.perf_counter() - started))
        return result

    def summary(self) -> dict:
        warm, steady = self.batches[:self.WARMUP_BATCHES], self.batches[self.WARMUP_BATCHES:]
        rows, seconds = sum(n for n, _ in steady), sum(t for _, t in steady)
        return {"batches": len(self.batches), "warmup_batches": len(warm),
                "warmup_seconds": round(sum(t for _, t in warm), 2),
                "steady_questions_per_second": round(rows / seconds, 2) if seconds > 0 else None}


class HostMemoryWatch:
    """Peak resident host memory of this process, split into anonymous memory (what must fit in RAM) and
    file-backed pages (memory-mapped weight files, which the OS can drop and re-read under pressure), sampled
    from /proc/self/status every ``interval`` seconds while the ``with`` block runs. ``ru_maxrss`` alone counts
    both: loading 16-bit safetensors maps the whole checkpoint. Linux only; elsewhere the summary is empty."""

    FIELDS = {"RssAnon": "cpu_peak_anon_gb", "RssFile": "cpu_peak_file_backed_gb"}

    def __init__(self, interval: float = 0.1):
        self.interval = interval
        self.peaks: dict[str, float] = {}
        self._stop = None
        self._thread = None

    def sample(self) -> None:
        try:
            lines = Path("/proc/self/status").read_text().splitlines()
        except OSError:
            return
        for line in lines:
            name, _, value = line.partition(":")
            if name in self.FIELDS:
                gb = int(value.split()[0]) / 2**20  # kB
                self.peaks[name] = max(self.peaks.get(name, 0.0), gb)

    def __enter__(self):
        import threading

        self._stop = threading.Event()

        def loop():
            while not self._stop.wait(self.interval):
                self.sample()

        self.sample()
        self._thread = threading.Thread(target=loop, daemon=True, name="host-memory-watch")
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.sample()
        return False

    def summary(self) -> dict:
        return {self.FIELDS[k]: round(v, 2) for k, v in self.peaks.items()}


def gpu_peak_gb() -> dict[str, float] | None:
    """The GPU memory peaks (GiB) since the last reset: reserved by torch's caching allocator and allocated to
    tensors; None without a GPU. The one reader of torch's peak counters for reports and phases."""
    import torch

    if not torch.cuda.is_available():
        return None
    return {"reserved": round(torch.cuda.max_memory_reserved() / 2**30, 2),
            "allocated": round(torch.cuda.max_memory_allocated() / 2**30, 2)}


def peak_memory_gb() -> dict:
    """This process's peak resident host memory and, with a GPU, the peak torch allocated and reserved on it."""
    import resource

    peak = {"cpu_peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)}
    gpu = gpu_peak_gb()
    if gpu is not None:
        peak["gpu_peak_allocated_gb"], peak["gpu_peak_reserved_gb"] = gpu["allocated"], gpu["reserved"]
    return peak
