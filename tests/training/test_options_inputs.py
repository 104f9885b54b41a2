"""training/options.py: a training run never writes into, or moves aside, a file or folder it reads."""

from types import SimpleNamespace

from mcqtune.training.options import output_problems


def options(**given):
    fields = dict(model_name_or_path="", train_file="", val_file=None, extra_train_files=[], adapter=None,
                  distill_from=[], pseudo_label_from=[], pseudo_label_file=None, val_test_like=None, chat_template=None)
    return SimpleNamespace(**{**fields, **given})


def test_a_model_among_the_outputs_a_fresh_run_moves_aside_is_refused(tmp_path):
    (tmp_path / "run" / "merged").mkdir(parents=True)
    problems = output_problems(options(model_name_or_path=str(tmp_path / "run" / "merged")),
                               SimpleNamespace(output_dir=str(tmp_path / "run")))
    assert len(problems) == 1 and "run/merged, which a training run in output_dir" in problems[0]


def test_inputs_elsewhere_in_the_folder_and_inline_templates_pass(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "train.csv").write_text("ID\n")
    template = "{% for m in messages %}" + "x" * 5000 + "{% endfor %}"  # inline, longer than a file name may be
    assert output_problems(options(train_file=str(tmp_path / "run" / "train.csv"), chat_template=template,
                                   model_name_or_path="Qwen/Qwen2.5-14B-Instruct-1M"),
                           SimpleNamespace(output_dir=str(tmp_path / "run"))) == []
    assert output_problems(options(chat_template="x" * 5000), SimpleNamespace(output_dir=str(tmp_path / "o"))) == []
