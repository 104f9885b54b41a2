"""meters: the batch clock tells warm-up from the steady rate; the host watch splits own memory from mapped files."""

import mmap

import numpy as np

from meters import BatchClock, HostMemoryWatch


def test_host_memory_watch_tells_own_memory_from_mapped_files(tmp_path):
    """The host peak is split: memory the process allocates counts as anonymous, a mapped (read) file as
    file-backed -- the part the OS can drop, which a peak RSS alone would count as needed RAM."""
    path = tmp_path / "weights.bin"
    path.write_bytes(b"\1" * (96 * 2**20))
    with HostMemoryWatch(interval=0.01) as before:
        pass
    with HostMemoryWatch(interval=0.01) as watch:
        block = np.ones(64 * 2**20 // 8)  # 64 MB of the process's own memory
        with path.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            assert sum(mapped[i] for i in range(0, len(mapped), 4096)) == len(mapped) // 4096  # touch every page
            watch.sample()
        del block
    grown = {k: watch.summary()[k] - before.summary()[k] for k in before.summary()}
    assert grown["cpu_peak_anon_gb"] >= 0.055 and grown["cpu_peak_file_backed_gb"] >= 0.085


def test_the_batch_clock_reports_the_first_batches_apart_from_the_steady_rate():
    import time

    clock = BatchClock()
    for size in (4, 4, 8, 8):
        assert clock.run(lambda rows: (time.sleep(0.002), len(rows))[1], list(range(size))) == size
    summary = clock.summary()
    assert summary["batches"] == 4 and summary["warmup_batches"] == 2 and summary["warmup_seconds"] >= 0
    assert 0 < summary["steady_questions_per_second"] <= 16 / 0.004
