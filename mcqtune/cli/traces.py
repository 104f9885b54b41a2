"""`mcq-tune traces`: the command line of mcqtune.infer.traces."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Sequence

import pandas as pd

from mcqtune.data.questions import load_mcq_csv
from mcqtune.errors import UserError
from mcqtune.infer.traces import check_output, keep_traces, merge_samples, parse_args, summary_path
from mcqtune.files import write_csv_atomic, write_json_atomic
from mcqtune.runs.folder import WRITTEN_FILES

logger = logging.getLogger("traces")


def main(argv: Sequence[str] | None = None) -> int:
    import dataclasses

    from mcqtune.infer import run as infer
    from mcqtune.model.loading import is_adapter_dir

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args, samples = parse_args(argv)
    out = check_output(args)
    frame = load_mcq_csv(args.test_file, require_answer=True, encoding=args.encoding, number_rows=args.number_rows)
    parts = []
    for k in range(samples):
        run_dir, suffix = Path(args.output_dir or out.with_name(out.stem + "_run")), k if samples > 1 else ""
        sample = dataclasses.replace(args, mode="reason", seed=args.seed + k, samples=1,  # one reply a run, no vote
                                     output_dir=str(run_dir / f"sample-{k}" if samples > 1 else run_dir),
                                     output_file=str(out.with_name(f"{out.stem}_answers{suffix}.csv")))
        if infer.run(sample).get("rank", 0) != 0:  # several processes: the first one writes the traces
            return 0
        parts.append(keep_traces(frame, pd.read_csv(Path(sample.run_dir) / "predictions.csv",
                                                    dtype={"ID": str, "answer": str}, keep_default_na=False)))
    kept, summary = merge_samples(parts)
    record = summary_path(out)
    advice = ("Reason with a model that reasons: the base model or a reasoning adapter rather than a direct-answer "
              "one, " if is_adapter_dir(args.model_path) else "Try a larger model that reasons, ") + \
        "a larger --max_reasoning_tokens, or --samples N --temperature T"
    if kept.empty:  # a header-only file would only be refused by training later
        earlier = [str(out.resolve())] if out.exists() else []  # an earlier run's traces, left as they are, still its
        write_json_atomic({**summary, "output_file": None, WRITTEN_FILES: [*earlier, str(record.resolve())],
                           "traces_written": False}, record)
        raise UserError(f"traces kept none of {summary['tried']} replies ({summary['closed_and_scored']} closed "
                        f"unanswered, {summary['wrong_answer']} with another letter than the label, "
                        f"{summary['no_reasoning']} a letter with no reasoning before it); nothing was written to "
                        f"{out} (counts in {record}). {advice}")
    write_json_atomic({**summary, "output_file": str(out.resolve()), WRITTEN_FILES: [str(record.resolve())],
                       "traces_written": True}, record)
    write_csv_atomic(kept, out)  # last, as infer writes its submission
    logger.info("kept %d of %d traces (their answer is the label) in %s", summary["kept"], summary["tried"], out)
    print(json.dumps({k: v for k, v in summary.items() if k != "by_subject"}))
    return 0
