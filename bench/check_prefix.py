"""Check on the machine at hand that shared-prefix scoring gives the letter probabilities of full prompts.

    python bench/check_prefix.py --model_path /tmp/demo/adapter --test_file /tmp/sample/test.csv [--ensemble DIR]

The CPU test suite checks this on transformers' forward; on a GPU the unsloth backend runs its own fused
forward with its own cache format, which only a GPU run can check. Exit status 1 when they disagree.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("UNSLOTH_DISABLE_STATISTICS", "1")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model_path", required=True)
    parser.add_argument("--test_file", required=True)
    parser.add_argument("--ensemble", nargs="*", default=[])
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--rows", type=int, default=96)
    parser.add_argument("--tolerance", type=float, default=0.02, help="largest allowed probability difference")
    args = parser.parse_args(argv)

    import modeling

    backend = modeling.select_backend(args.backend)
    import numpy as np

    import infer
    from mcq_dataset import cyclic_orders, load_mcq_csv
    from scoring import SharedPrefix, letter_probs

    run = infer.InferArguments(test_file=args.test_file, model_path=args.model_path, ensemble=args.ensemble)
    model, tokenizer = infer.load_for_inference(run, backend)
    frame = load_mcq_csv(args.test_file).head(args.rows)
    rows = list(range(len(frame)))
    kwargs = dict(orders=cyclic_orders(2), adapters=infer.adapter_names(run))
    full = letter_probs(model, tokenizer, frame, rows, **kwargs)
    shared = letter_probs(model, tokenizer, frame, rows, prefix=SharedPrefix(tokenizer), **kwargs)
    diff = float(np.abs(full - shared).max())
    agree = float((full.argmax(1) == shared.argmax(1)).mean())
    print(f"backend {backend}: {len(rows)} questions, max probability difference {diff:.2e}, "
          f"same answer for {agree:.1%}")
    return 0 if diff <= args.tolerance else 1


if __name__ == "__main__":
    sys.exit(main())
