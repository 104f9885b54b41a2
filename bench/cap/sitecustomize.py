"""Stand-in for a smaller card: with MCQ_BENCH_CAP_GB set, every Python process started with this folder on
PYTHONPATH caps its GPU memory (torch.cuda.set_per_process_memory_fraction) before any user code runs, so
the README commands themselves run as they would on a 24 GB (or 16 GB) card. Bench-only; the project never
imports it."""
import os
import sys

if os.environ.get("MCQ_BENCH_CAP_GB"):
    # Capping initialises CUDA before the command's own imports. Unsloth sets its allocator option
    # (expandable segments) on import, before CUDA starts, in every process that imports it -- ours, not the
    # reference recipe (bench_14b.py) -- so set it here first, or the cap would measure another allocator.
    if os.path.basename(sys.argv[0] if sys.argv else "") != "bench_14b.py":
        os.environ.setdefault("PYTORCH_ALLOC_CONF", "expandable_segments:True")
    import torch

    if torch.cuda.is_available():
        device = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(device)
        total = torch.cuda.get_device_properties(device).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, float(os.environ["MCQ_BENCH_CAP_GB"]) * 2**30 / total),
                                                   device)
