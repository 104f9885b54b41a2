"""How far FP8 weights (core/fp8.py) move the answers, on the CPU: the letter probabilities of a tiny model
scored with its 16-bit (float32) weights against the same model merged and held in FP8, on the sample's 160
held-out questions; with the demo's trained adapter and with the untrained base (whose letters are nearly tied, the
harder case). Also greedy reasoning replies: the share of questions whose first 16 generated tokens agree.

    mcq-tune demo --out /tmp/demo && python bench/cpu_fp8.py --demo /tmp/demo --json bench/cpu_fp8.json
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def compare(model, tokenizer, frame, label: str) -> dict:
    import numpy as np
    import torch

    from mcqtune.core.reasoning import generate_replies
    from mcqtune.core.scoring import score_frame
    from mcqtune.data.questions import PromptStyle
    from mcqtune.model.prompts import encode_prompts
    from mcqtune.core.fp8 import to_fp8

    converted, layers = to_fp8(copy.deepcopy(model))
    wide = score_frame(model, tokenizer, frame, batch_size=32)
    narrow = score_frame(converted, tokenizer, frame, batch_size=32)
    truth = frame["answer"].map("ABCD".index).to_numpy()
    prompts = encode_prompts(tokenizer, frame.head(32), PromptStyle(reasoning=True), 512)
    stops = [tokenizer.pad_token_id]
    with torch.inference_mode():
        replies_wide = generate_replies(model, tokenizer, prompts, 16, stops, repetition_penalty=1.0)
        replies_narrow = generate_replies(converted, tokenizer, prompts, 16, stops, repetition_penalty=1.0)
    return {"model": label, "questions": len(frame), "fp8_layers": layers,
            "letter_agreement": round(float((wide.argmax(1) == narrow.argmax(1)).mean()), 4),
            "mean_abs_prob_diff": round(float(np.abs(wide - narrow).mean()), 5),
            "max_abs_prob_diff": round(float(np.abs(wide - narrow).max()), 5),
            "accuracy_16bit": round(float((wide.argmax(1) == truth).mean()), 4),
            "accuracy_fp8": round(float((narrow.argmax(1) == truth).mean()), 4),
            "greedy_replies": len(prompts),
            "greedy_replies_equal_16_tokens": sum(a == b for a, b in zip(replies_wide, replies_narrow))}


def main() -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mcqtune.data.questions import load_mcq_csv

    parser = argparse.ArgumentParser()
    parser.add_argument("--demo", required=True, help="the --out folder of a finished `mcq-tune demo`")
    parser.add_argument("--json", required=True)
    args = parser.parse_args()
    demo = Path(args.demo)
    tokenizer = AutoTokenizer.from_pretrained(demo / "tiny-qwen")
    tokenizer.padding_side = "left"
    frame = load_mcq_csv(demo / "sample" / "test.csv")
    base = AutoModelForCausalLM.from_pretrained(demo / "tiny-qwen", dtype=torch.float32).eval()
    trained = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(demo / "tiny-qwen", dtype=torch.float32),
                                        demo / "demo" / "adapter").eval()
    rows = [compare(trained, tokenizer, frame, "demo adapter (trained)"), compare(base, tokenizer, frame,
                                                                                  "tiny base (untrained)")]
    for row in rows:
        print(json.dumps(row))
    Path(args.json).write_text(json.dumps({"note": __doc__.split("\n\n")[0], "runs": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
