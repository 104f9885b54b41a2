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

    from mcqtune.model import loading as modeling
    backend = modeling.select_backend(args.backend)
    import numpy as np

    from mcqtune.infer import run as infer
    from mcqtune.infer import setup as infer_setup
    from mcqtune.data.questions import load_mcq_csv
    from mcqtune.data.option_orders import cyclic_orders
    import torch

    from mcqtune.model.prompts import encode_prompt
    from mcqtune.core.scoring import (SharedPrefix, left_pad, letter_logits, letter_logits_after_prefix,
                                           letter_probs, letter_token_ids, model_device)

    run = infer.InferArguments(test_file=args.test_file, model_path=args.model_path, ensemble=args.ensemble)
    from mcqtune.infer.loading import load_inference_model

    model, tokenizer, _ = load_inference_model(infer.load_request(run, backend))
    frame = load_mcq_csv(args.test_file).head(args.rows)
    rows = list(range(len(frame)))
    kwargs = dict(orders=cyclic_orders(2), adapters=infer_setup.adapter_names(run))
    full = letter_probs(model, tokenizer, frame, rows, **kwargs)
    shared = letter_probs(model, tokenizer, frame, rows, prefix=SharedPrefix(tokenizer), **kwargs)
    diff = float(np.abs(full - shared).max())
    agree = float((full.argmax(1) == shared.argmax(1)).mean())
    print(f"backend {backend}: {len(rows)} questions, max probability difference {diff:.2e}, "
          f"same answer for {agree:.1%}")
    # Logits: padded batch vs each prompt alone (equal in exact arithmetic: the rounding noise of this
    # machine), and shared prefix vs padded batch (must be of the same size).
    prompts = [encode_prompt(tokenizer, row) for _, row in frame.iterrows()]
    letters = letter_token_ids(tokenizer)
    prefix = SharedPrefix(tokenizer)
    device = model_device(model)
    with torch.inference_mode():
        ids, mask = left_pad(prompts, tokenizer.pad_token_id)
        batched = letter_logits(model, ids.to(device), mask.to(device), letters)
        alone = torch.cat([letter_logits(model, torch.tensor([p], device=device), None, letters) for p in prompts])
        after = letter_logits_after_prefix(model, prefix, None, prompts, prefix.usable_length(prompts), letters,
                                           tokenizer.pad_token_id)
    noise = float((batched - alone).abs().max())
    gap = float((after - batched).abs().max())
    gap_alone = float((after - alone).abs().max())
    print(f"letter logits (scale {float(alone.abs().max()):.1f}): batched vs alone {noise:.3f}, "
          f"shared prefix vs batched {gap:.3f}, shared prefix vs alone {gap_alone:.3f}")
    return 0 if diff <= args.tolerance or gap_alone <= 2 * noise + 1e-3 else 1


if __name__ == "__main__":
    sys.exit(main())
