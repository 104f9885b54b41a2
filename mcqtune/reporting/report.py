"""Pictures and summaries for people: training curves, answer distribution, per-subject accuracy, confusion.

Every function takes plain data and writes one PNG (matplotlib, Agg backend, no display needed); the
scripts call them at the end of a run and the notebook shows the files.

Subject names are the user's text, often Chinese. Matplotlib's default font has no CJK glyphs, so the
subject chart is drawn in a font found at run time that covers every character of the names: an installed
CJK font (Noto Sans CJK, Source Han Sans, WenQuanYi, SimHei, Microsoft YaHei, PingFang, ...) or Noto Sans
SC from the ``pylopdf-fonts-zh-cn`` package in requirements.txt. Without one the bars are labelled
``subject 1``, ``subject 2``, ... and report.md lists which number is which subject (one warning says so).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import numpy as np
import pandas as pd

from mcqtune.files import save_figure_atomic, write_atomic, write_json_atomic
from mcqtune.data.questions import ANSWER_COLUMN, LETTERS, SUBJECT_COLUMN, has_answers
from mcqtune.reporting.meters import peak_memory_gb

logger = logging.getLogger(__name__)


# Families known to carry Simplified Chinese glyphs, tried first (in this order) before any other font.
CJK_FAMILIES = ("Noto Sans CJK SC", "Noto Sans SC", "Source Han Sans SC", "Source Han Sans CN", "Noto Sans CJK JP",
                "Noto Sans CJK TC", "Source Han Sans", "WenQuanYi Micro Hei", "WenQuanYi Zen Hei", "Microsoft YaHei",
                "SimHei", "PingFang SC", "Hiragino Sans GB", "Heiti SC", "STHeiti", "Noto Serif CJK SC",
                "Noto Serif SC", "AR PL UMing CN", "Droid Sans Fallback", "Arial Unicode MS")
# pip packages that ship a CJK font file; each module's sans_path() names it.
FONT_PACKAGES = ("pylopdf_fonts_zh_cn",)
FONT_HINT = "pip install pylopdf-fonts-zh-cn (or apt-get install fonts-noto-cjk)"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# ------------------------------------------------------------------------------------------ fonts for user text


class FontChoice(NamedTuple):
    family: str
    path: str


@dataclass(frozen=True)
class SubjectLabels:
    """What the subject chart writes for each subject, and in which font (None: matplotlib's default)."""

    labels: dict[str, str] = field(default_factory=dict)
    font: FontChoice | None = None
    numbered: bool = False


@functools.lru_cache(maxsize=None)
def _charmap(path: str) -> frozenset[int]:
    from matplotlib.ft2font import FT2Font

    try:
        return frozenset(FT2Font(path).get_charmap())
    except (OSError, RuntimeError, ValueError):  # unreadable or unsupported font file
        return frozenset()


def font_covers(path: str, text: str) -> bool:
    """True when the font file has a glyph for every visible character of ``text``."""
    charmap = _charmap(str(path))
    return all(ord(char) in charmap for char in set(text) if not char.isspace())


@functools.lru_cache(maxsize=None)
def register_packaged_fonts() -> tuple[str, ...]:
    """Add the font files of the installed FONT_PACKAGES to matplotlib's font manager; their paths."""
    from matplotlib import font_manager

    added = []
    for module_name in FONT_PACKAGES:
        try:
            module = __import__(module_name)
            path = str(module.sans_path())
            font_manager.fontManager.addfont(path)
        except (ImportError, AttributeError, OSError, RuntimeError, ValueError):
            continue
        added.append(path)
    return tuple(added)


def candidate_fonts() -> list[FontChoice]:
    """Every font matplotlib knows (the packaged ones included), the known CJK families first."""
    from matplotlib import font_manager

    _pyplot()
    register_packaged_fonts()
    entries = {entry.fname: FontChoice(entry.name, entry.fname) for entry in font_manager.fontManager.ttflist}
    rank = {family.casefold(): i for i, family in enumerate(CJK_FAMILIES)}
    return sorted(entries.values(), key=lambda font: (rank.get(font.family.casefold(), len(rank)), font.path))


def default_font_path() -> str:
    from matplotlib import font_manager

    _pyplot()
    return font_manager.findfont(font_manager.FontProperties())


def find_font(text: str) -> FontChoice | None:
    """A font that has every character of ``text``, or None."""
    return next((font for font in candidate_fonts() if font_covers(font.path, text)), None)


def label_subjects(names: Sequence[str]) -> SubjectLabels:
    """The names themselves, in a font that draws them; numbered labels when no installed font can."""
    names = sorted(set(map(str, names)))
    text = "".join(names)
    if font_covers(default_font_path(), text):
        return SubjectLabels({name: name for name in names})
    font = find_font(text)
    if font is not None:
        return SubjectLabels({name: name for name in names}, font)
    logger.warning("no installed font has glyphs for every subject name: the subject chart labels them 'subject 1' "
                   "to 'subject %d' and report.md lists which is which. For the names themselves: %s",
                   len(names), FONT_HINT)
    return SubjectLabels({name: f"subject {number}" for number, name in enumerate(names, 1)}, numbered=True)


def plot_training_curves(log_history: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Training loss, validation loss and validation accuracy against the optimiser step."""
    plt = _pyplot()
    train = [(e["step"], e["loss"]) for e in log_history if "loss" in e and "step" in e]
    val_loss = [(e["step"], e["eval_loss"]) for e in log_history if "eval_loss" in e]
    val_acc = [(e["step"], e["eval_accuracy"]) for e in log_history if "eval_accuracy" in e]
    fig, loss_ax = plt.subplots(figsize=(7, 4))
    if train:
        loss_ax.plot(*zip(*train), label="train loss", color="tab:blue")
    if val_loss:
        loss_ax.plot(*zip(*val_loss), "o-", label="validation loss", color="tab:cyan")
    loss_ax.set_xlabel("step")
    loss_ax.set_ylabel("loss")
    handles, labels = loss_ax.get_legend_handles_labels()
    if val_acc:
        acc_ax = loss_ax.twinx()
        acc_ax.plot(*zip(*val_acc), "s-", color="tab:red", label="validation accuracy")
        acc_ax.set_ylim(0, 1)
        acc_ax.set_ylabel("accuracy")
        h2, l2 = acc_ax.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    if handles:
        loss_ax.legend(handles, labels, loc="center right")
    loss_ax.set_title("Training")
    return _save(fig, path)


def plot_answer_distribution(predicted: Sequence[str], path: str | Path, expected: Sequence[str] | None = None) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    x = np.arange(len(LETTERS))
    pred_counts = [list(predicted).count(letter) for letter in LETTERS]
    width = 0.4 if expected is not None else 0.6
    ax.bar(x - (width / 2 if expected is not None else 0), pred_counts, width, label="predicted")
    if expected is not None:
        ax.bar(x + width / 2, [list(expected).count(letter) for letter in LETTERS], width, label="true")
        ax.legend()
    ax.set_xticks(x, LETTERS)
    ax.set_ylabel("questions")
    ax.set_title("Answer distribution")
    return _save(fig, path)


def confusion_matrix(predicted: Sequence[str], expected: Sequence[str]) -> np.ndarray:
    """4x4 counts, rows = true letter, columns = predicted letter."""
    matrix = np.zeros((4, 4), dtype=int)
    for p, e in zip(predicted, expected):
        if p in LETTERS and e in LETTERS:
            matrix[LETTERS.index(e), LETTERS.index(p)] += 1
    return matrix


def plot_confusion(matrix: np.ndarray, path: str | Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.imshow(matrix, cmap="Blues")
    for (i, j), value in np.ndenumerate(matrix):
        ax.text(j, i, str(value), ha="center", va="center",
                color="white" if value > matrix.max() / 2 else "black")
    ax.set_xticks(range(4), LETTERS)
    ax.set_yticks(range(4), LETTERS)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("Confusion matrix")
    return _save(fig, path)


def draw_subject_accuracy(per_subject: dict[str, float], labels: SubjectLabels | None = None):
    """The figure of accuracy per subject, lowest at the bottom; names as ``labels`` says (default: found now)."""
    from matplotlib.font_manager import FontProperties

    plt = _pyplot()
    if labels is None:
        labels = label_subjects(list(per_subject))
    items = sorted(per_subject.items(), key=lambda kv: kv[1])
    fig, ax = plt.subplots(figsize=(6, max(2.5, 0.28 * len(items) + 1)))
    ax.barh(range(len(items)), [v for _, v in items], color="tab:green")
    font = FontProperties(fname=labels.font.path) if labels.font else None
    ax.set_yticks(range(len(items)), [labels.labels.get(str(k), str(k)) for k, _ in items], fontproperties=font)
    ax.set_xlim(0, 1)
    ax.axvline(0.25, color="grey", linestyle="--", linewidth=1)
    ax.set_xlabel("accuracy (dashed: chance)")
    ax.set_title("Accuracy by subject")
    return fig


def plot_subject_accuracy(per_subject: dict[str, float], path: str | Path, labels: SubjectLabels | None = None) -> Path:
    return _save(draw_subject_accuracy(per_subject, labels), path)


def _save(fig, path: str | Path) -> Path:
    fig.tight_layout()
    save_figure_atomic(fig, path)
    _pyplot().close(fig)
    return Path(path)


def write_json(data: dict[str, Any], path: str | Path) -> Path:
    return write_json_atomic(data, path)


# ------------------------------------------------------------------------------------------ inference report


def subject_column(frame) -> str | None:
    """The frame's subject column, however its header is spelt (subject, Subject, SUBJECT): frames from
    mcq_dataset.load_mcq_csv already carry the canonical name; predictions read back from disk may not."""
    return next((column for column in frame.columns if str(column).strip().casefold() == SUBJECT_COLUMN), None)


def accuracy_by_subject(frame, correct: np.ndarray) -> dict[str, float] | None:
    column = subject_column(frame)
    if column is None:
        return None
    subjects = frame[column].astype(str).values
    return {s: round(float(correct[subjects == s].mean()), 4) for s in sorted(set(subjects))}


def reasoning_summary(predictions) -> dict:
    """Reasoning replies: how many committed to a letter after their reasoning, how many were closed and scored
    (and why), and the tokens generated; with self-consistency, the votes (``vote_summary``)."""
    reasoned = predictions[predictions["source"].isin(["reason", "reason_closed"])]
    tokens = pd.to_numeric(reasoned["reasoning_tokens"], errors="coerce")
    closed = reasoned[reasoned["source"] == "reason_closed"]
    if "vote" in predictions:
        return {"votes": vote_summary(predictions[predictions["source"] == "vote"])}
    return {"replies": len(reasoned), "read_after_reasoning": int((reasoned["source"] == "reason").sum()),
            "closed_and_scored": len(closed), "closed_because": closed["rule"].value_counts().to_dict(),
            "generated_tokens": int(tokens.sum()),
            "mean_tokens": round(float(tokens.mean()), 1) if len(tokens) else None,
            "max_tokens": int(tokens.max()) if len(tokens) else None}


def vote_summary(voted) -> dict:
    """Self-consistency: replies sampled per question, questions stopped before the last round, ties broken."""
    counts = [sum(int(cell.split(":")[1]) for cell in vote.split()) for vote in voted["vote"]]
    tokens = int(pd.to_numeric(voted["reasoning_tokens"]).sum())
    closed = int(pd.to_numeric(voted["closed_replies"]).sum())
    return {"questions": len(voted), "replies": sum(counts), "generated_tokens": tokens,
            "closed_and_scored_replies": closed,
            "mean_replies_per_question": round(sum(counts) / len(counts), 2) if counts else None,
            "fewest_replies": min(counts, default=None), "most_replies": max(counts, default=None),
            "ties_broken_by_closing_probabilities": int(voted["rule"].str.contains("tie").sum()),
            "mean_tokens_per_reply": round(tokens / sum(counts), 1) if sum(counts) else None}


def inference_report(frame, predictions, run: dict[str, Any], seconds: float, answered_now: int) -> dict:
    """report.json of infer.py: the run (model, precision, batch, restarts), speed, answers, accuracy."""
    report = {
        **run, "rows": len(frame),
        "answer_distribution": {k: int((predictions["answer"] == k).sum()) for k in LETTERS},
        "seconds": round(seconds, 2), "answered_this_run": answered_now,
        "questions_per_second": round(answered_now / seconds, 2) if seconds > 0 and answered_now else None,
        **peak_memory_gb(),
    }
    if "rule" in predictions:
        unparsed = predictions[predictions["source"] == "score_fallback"]
        report["unparsed"] = {"count": len(unparsed),
                              "by_reason": unparsed["rule"].value_counts().to_dict(),
                              "rows": unparsed[["ID", "raw", "rule", "answer"]].to_dict("records")}
        report["rules"] = predictions["rule"].value_counts().to_dict()
    if "reasoning_tokens" in predictions:
        report["reasoning"] = reasoning_summary(predictions)
    if has_answers(frame):
        correct = predictions["answer"].values == frame[ANSWER_COLUMN].values
        report["accuracy"] = round(float(correct.mean()), 4)
        per_subject = accuracy_by_subject(frame, correct)
        if per_subject is not None:
            report["accuracy_by_subject"] = per_subject
        report["confusion_matrix"] = confusion_matrix(list(predictions["answer"]),
                                                      list(frame[ANSWER_COLUMN])).tolist()
    elif ANSWER_COLUMN in frame and frame[ANSWER_COLUMN].isin(LETTERS).any():  # a partly labelled file
        labelled = frame[ANSWER_COLUMN].isin(LETTERS).to_numpy()
        correct = predictions["answer"].values[labelled] == frame[ANSWER_COLUMN].values[labelled]
        report["accuracy_on_labelled_rows"] = {"rows": int(labelled.sum()), "accuracy": round(float(correct.mean()), 4)}
    return report


def write_inference_report(report: dict, predictions, frame, run_dir: str | Path) -> None:
    """report.json, report.md and the charts it shows."""
    run_dir = Path(run_dir)
    write_json(report, run_dir / "report.json")
    expected = list(frame[ANSWER_COLUMN]) if "accuracy" in report else None
    plot_answer_distribution(list(predictions["answer"]), run_dir / "answer_distribution.png", expected)
    if "confusion_matrix" in report:
        plot_confusion(np.array(report["confusion_matrix"]), run_dir / "confusion_matrix.png")
    labels = None
    if "accuracy_by_subject" in report:
        labels = label_subjects(list(report["accuracy_by_subject"]))
        plot_subject_accuracy(report["accuracy_by_subject"], run_dir / "accuracy_by_subject.png", labels)
    write_atomic(run_dir / "report.md", render_markdown(report, labels))


def subject_legend(per_subject: dict[str, float], labels: SubjectLabels) -> list[str]:
    """report.md's table from the chart's numbered labels to the subjects' names."""
    lines = ["", "| chart label | subject | accuracy |", "| --- | --- | --- |"]
    lines += [f"| {labels.labels[name]} | {name.replace('|', '/')} | {per_subject[name]:.2%} |"
              for name in sorted(per_subject)]  # the order label_subjects numbers them in
    return lines


def render_markdown(report: dict, subject_labels: SubjectLabels | None = None) -> str:
    lines = [f"# Inference report: {report['mode']} mode", "",
             f"- test file: `{report['test_file']}` ({report['rows']} questions)",
             f"- model: `{report['model_path']}` (base `{report['base_model']}`), weights {report['precision']}",
             f"- speed: {report['questions_per_second']} questions/s ({report['seconds']} s answering, "
             f"{report['startup_seconds']} s start-up, batch {report['batch_size']}, "
             f"{report['processes']} process(es))",
             "- answers: " + ", ".join(f"{k} {v}" for k, v in report["answer_distribution"].items())]
    if "cpu_peak_anon_gb" in report:
        lines.append(f"- host memory: peak {report['cpu_peak_rss_gb']} GB resident, of which at most "
                     f"{report['cpu_peak_anon_gb']} GB the process's own and {report.get('cpu_peak_file_backed_gb')} "
                     "GB mapped files (weights the OS can drop and re-read)")
    timing = report.get("answer_timing") or {}
    if timing.get("steady_questions_per_second"):
        lines.insert(next(i for i, line in enumerate(lines) if line.startswith("- speed")) + 1,
                     f"  - after the first {timing['warmup_batches']} batches ({timing['warmup_seconds']} s: longest "
                     f"prompts, first-shape compilation): {timing['steady_questions_per_second']} questions/s")
    if report.get("fallbacks"):
        lines.append(f"- **loaded as {report['loaded_as']} after failures**: "
                     + "; ".join(f"{f['way']}: {f['error']}" for f in report["fallbacks"]))
    if report.get("restarted"):
        lines.append("- started over: the checkpoint was made with another "
                     f"{', '.join(report['restarted']['changed'])}")
    if "accuracy" in report:
        lines.append(f"- **accuracy: {report['accuracy']:.2%}**")
    if "accuracy_on_labelled_rows" in report:
        part = report["accuracy_on_labelled_rows"]
        lines.append(f"- **accuracy on the {part['rows']} labelled rows: {part['accuracy']:.2%}** (the others have no "
                     "answer)")
    if "votes" in report.get("reasoning", {}):
        v = report["reasoning"]["votes"]
        lines.append(f"- self-consistency: {v['replies']} sampled replies for {v['questions']} questions "
                     f"({v['mean_replies_per_question']} each, {v['fewest_replies']}-{v['most_replies']}: a question "
                     f"stops once its leading letter cannot lose), {v['closed_and_scored_replies']} of them closed and "
                     f"scored; {v['ties_broken_by_closing_probabilities']} ties "
                     f"broken by closing letter probabilities; {v['generated_tokens']} tokens generated")
    elif "reasoning" in report:
        r = report["reasoning"]
        lines.append(f"- reasoning: {r['read_after_reasoning']} of {r['replies']} replies committed to a letter after "
                     f"their reasoning; {r['closed_and_scored']} were closed and their letter scored "
                     f"({', '.join(f'{k} {v}' for k, v in r['closed_because'].items()) or 'none'}); "
                     f"{r['generated_tokens']} tokens generated, {r['mean_tokens']} per reply (max {r['max_tokens']})")
    if "unparsed" in report:
        lines.append(f"- replies without a readable letter: {report['unparsed']['count']} (answered by scoring)")
        for row in report["unparsed"]["rows"][:20]:
            lines.append(f"  - `{row['ID']}` ({row['rule'].split(':', 1)[-1]}): "
                         f"{str(row['raw'])[:80]!r} -> {row['answer']}")
    lines += ["", "![answers](answer_distribution.png)"]
    if "confusion_matrix" in report:
        lines.append("![confusion](confusion_matrix.png)")
    if "accuracy_by_subject" in report:
        lines.append("![subjects](accuracy_by_subject.png)")
        if subject_labels is not None and subject_labels.numbered:
            lines += subject_legend(report["accuracy_by_subject"], subject_labels)
    return "\n".join(lines) + "\n"
