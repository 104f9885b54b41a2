"""`mcq-tune compare`: the command line of mcqtune.reporting.compare."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from mcqtune.errors import UserError
from mcqtune.reporting.compare import describe_run, make_parser, render
from mcqtune.runs.folder import WRITTEN_FILES, ownership_problem
from mcqtune.files import write_atomic, write_json_atomic
from mcqtune.runs.provenance import check_same_answered


def main(argv: Sequence[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    folders = [Path(r) for r in args.runs]
    out = Path(args.output_file)
    if out.suffix != ".md":
        raise UserError(f"--output_file {out}: name a .md file (the JSON goes beside it as {out.stem}.json)")
    for folder in folders:
        if not (folder / "predictions.csv").is_file():
            raise UserError(f"{folder}: no predictions.csv; give infer.py run folders")
        if folder.resolve() in out.resolve().parents:
            raise UserError(f"--output_file {out} lies inside the run folder {folder}, an input; write elsewhere")
    record = out.with_suffix(".json")
    problem = ownership_problem([out, record], record, "--output_file")  # never over a run's report or your file
    if problem:
        raise UserError(problem)
    check_same_answered([f / "predictions.csv" for f in folders], consumer="compare", allow_bare=None)
    rows = [describe_run(folder) for folder in folders]
    write_json_atomic({"runs": rows, "output_file": str(out.resolve()),
                       WRITTEN_FILES: [str(out.resolve()), str(record.resolve())]}, record)
    write_atomic(out, render(rows))
    print(render(rows))
    return 0
