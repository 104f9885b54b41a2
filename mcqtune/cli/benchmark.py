"""`mcq-tune benchmark`: the command line of mcqtune.infer.benchmark."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

from mcqtune.data.questions import SUBJECT_COLUMN, load_mcq_csv
from mcqtune.errors import ConfigError
from mcqtune.runs.folder import set_aside
from mcqtune.infer.benchmark import (
    MAX_CONTEXT_TOKENS,
    OUTPUTS,
    benchmark,
    check_dev_apart,
    check_outputs,
    lm_eval_description,
    make_parser,
    shots_for,
    summarise,
    write_outputs,
)


def main(argv: Sequence[str] | None = None) -> int:
    from mcqtune.infer.loading import load_inference_model
    from mcqtune.infer.options import InferArguments
    from mcqtune.infer.setup import load_request
    from mcqtune.model.loading import select_backend

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = make_parser().parse_args(argv)
    if args.shots < 0 or args.batch_size < 1:
        raise ConfigError(f"--shots must be 0 or more and --batch_size 1 or more (got {args.shots}, {args.batch_size})")
    if args.shots and not args.dev_file:
        raise ConfigError(f"--shots {args.shots} needs --dev_file: the solved questions the shots are taken from")
    test = load_mcq_csv(args.test_file, require_answer=True)
    dev = load_mcq_csv(args.dev_file, require_answer=True) if args.dev_file else None
    if dev is not None and args.shots:
        check_dev_apart(dev, test, args.dev_file)
        test_subjects = test[SUBJECT_COLUMN] if SUBJECT_COLUMN in test else [None]
        for subject in dict.fromkeys(test_subjects):  # every subject has its shots, before any model loads
            shots_for(dev, subject, args.shots)
    out_dir = Path(args.output_dir or Path(args.test_file).with_name(Path(args.test_file).stem + "_benchmark"))
    check_outputs(out_dir)
    subjects = sorted(test[SUBJECT_COLUMN].dropna().unique()) if SUBJECT_COLUMN in test else []
    built = [s for s in subjects if lm_eval_description(args.task, s) is None]  # before loading: lm-eval is needed
    backend = select_backend(args.backend)
    options = InferArguments(test_file=args.test_file, model_path=args.model_path, base_model_id=args.base_model_id,
                             backend=backend, load_in_4bit=args.load_in_4bit, max_prompt_tokens=MAX_CONTEXT_TOKENS)
    request = load_request(options, backend)
    model, tokenizer, _ = load_inference_model(request)
    result = benchmark(model.eval(), tokenizer, test, dev, task=args.task, shots=args.shots, circular=args.circular,
                       batch_size=args.batch_size)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = {"task": args.task, "shots": args.shots, "circular": args.circular, "model_path": args.model_path,
              "base_model": request.base, "test_file": args.test_file, "dev_file": args.dev_file,
              "prompt": "lm-evaluation-harness's doc_to_text and description, no chat template; letters ' A'..' D'",
              "descriptions_built_for": built,  # subjects lm-eval's task does not have: its pattern, filled in
              "summary": summarise(result, args.circular)}
    set_aside(out_dir, OUTPUTS, "an earlier benchmark's outputs")  # checked ours above; kept, not replaced
    write_outputs(out_dir, result, report)
    overall = report["summary"]["overall"]
    print(f"acc {overall['acc']:.4f}" + (f", CircularEval {overall['circular_acc']:.4f}" if args.circular else "")
          + f" on {overall['questions']} questions. Report: {out_dir / 'benchmark_report.md'}")
    return 0
