"""infer/outputs.py: one checkpoint per process, the letters before a prior was divided out, and a finished run's
outputs set aside by a run that does not continue it."""

from types import SimpleNamespace

from mcqtune.infer.run import InferArguments
from mcqtune.infer.outputs import checkpoint_path, letter_distributions, set_aside_earlier_outputs


def test_each_process_keeps_its_own_checkpoint(tmp_path):
    assert checkpoint_path(tmp_path, 0, 1) == tmp_path / "predictions.partial.jsonl"
    assert checkpoint_path(tmp_path, 1, 2) == tmp_path / "predictions.partial.rank1-of-2.jsonl"


def test_the_uncorrected_letters_are_counted_beside_the_prior():
    records = {"1": {"probs_uncorrected": [0.1, 0.7, 0.1, 0.1]}, "2": {"probs_uncorrected": [0.4, 0.3, 0.2, 0.1]},
               "3": {"probs_uncorrected": [0.1, 0.6, 0.2, 0.1]}}
    assert letter_distributions(records, None) == {}
    assert letter_distributions(records, [0.4, 0.2, 0.2, 0.2]) == {
        "letter_prior": [0.4, 0.2, 0.2, 0.2], "answer_distribution_uncorrected": {"A": 1, "B": 2, "C": 0, "D": 0}}


def test_a_run_that_starts_over_sets_the_earlier_submission_and_report_aside(tmp_path):
    args = InferArguments(output_file=str(tmp_path / "s.csv"))
    args.run_dir.mkdir()
    (tmp_path / "s.csv").write_text("ID,answer\n")
    (args.run_dir / "report.json").write_text("{}")
    set_aside_earlier_outputs(args, SimpleNamespace(resumed=True))  # continuing: nothing moves
    assert (tmp_path / "s.csv").is_file()
    set_aside_earlier_outputs(args, SimpleNamespace(resumed=False))
    (aside,) = args.run_dir.glob("previous-*")
    assert sorted(p.name for p in aside.iterdir()) == ["report.json", "s.csv"] and not (tmp_path / "s.csv").exists()


def test_a_submission_of_another_run_or_a_hand_made_one_is_never_replaced(tmp_path):
    import json

    from mcqtune.infer.outputs import output_problems

    test_file = tmp_path / "test.csv"
    test_file.write_text("ID,question\n")
    (tmp_path / "s.csv").write_text("ID,answer\n1,A\n")
    mine = InferArguments(output_file=str(tmp_path / "s.csv"), test_file=str(test_file))
    other = InferArguments(output_file=str(tmp_path / "s.csv"), test_file=str(test_file),
                           output_dir=str(tmp_path / "other_run"))
    (problem,) = [p for p in output_problems(mine) if "already exists" in p]  # hand-made: nobody owns it
    assert "s.csv" in problem and "move it away" in problem
    mine.run_dir.mkdir()
    (mine.run_dir / "report.json").write_text(json.dumps({"output_file": str((tmp_path / "s.csv").resolve())}))
    assert not [p for p in output_problems(mine) if "already exists" in p]  # its own earlier submission
    (problem,) = [p for p in output_problems(other) if "already exists" in p]  # s_run's submission
    assert "other_run" in problem


def test_a_run_folder_holding_another_submissions_record_is_refused_while_that_submission_stays(tmp_path):
    """s.csv and s.txt share s_run/ (so do two output files given one --output_dir): the second run would set s.csv's
    record aside and leave s.csv without one."""
    import json

    from mcqtune.infer.outputs import output_problems

    test_file = tmp_path / "test.csv"
    test_file.write_text("ID,question\n")
    first = InferArguments(output_file=str(tmp_path / "s.csv"), test_file=str(test_file))
    second = InferArguments(output_file=str(tmp_path / "s.txt"), test_file=str(test_file))
    assert first.run_dir == second.run_dir
    first.run_dir.mkdir()
    (first.run_dir / "report.json").write_text(json.dumps({"output_file": str((tmp_path / "s.csv").resolve())}))
    assert not output_problems(second)  # s.csv is gone: its record describes nothing, and may be set aside
    (tmp_path / "s.csv").write_text("ID,answer\n1,A\n")
    (problem,) = output_problems(second)
    assert problem.startswith(f"the run folder {first.run_dir} holds the record of another output file") \
        and "its own --output_dir" in problem
    assert not output_problems(first)  # its own folder
