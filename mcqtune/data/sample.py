"""Generate the project's own small Chinese MCQ sample (competition layout) that a tiny model can learn.

    mcq-tune sample data/sample --train 480 --test 160 --seed 7
    mcq-tune sample data/hard --hard --seed 7        # the testbed of bench/cpu_levers.py

Real questions need real knowledge, which a randomly initialised model does not have. These questions are
built so that the answer is determined by the question text: every question belongs to one of eight
subjects, written with that subject's own vocabulary, and each subject always has the same answer letter
(two subjects per letter, so answers stay balanced). An untrained model is at chance (25%); a model that
learns "subject -> letter" from the training file answers the held-out file far above it. The demo and the
learning test use these files; the real recipe uses the competition's own CSVs.

``--hard`` makes a testbed on which a tiny model stays well below 100%, so that the leaderboard levers
(folds, ensembles, letter-bias correction, the four-letter loss) have room to show: near-miss distractors
written with the topic words of a neighbouring subject whose answer is another letter, few training rows, a
share of the training answers replaced by another letter (label noise), and training answers skewed towards
A while the test file stays balanced. The option in the subject's own words is the right one, so the answer
also follows the option text when the options are reordered (a tiny model learns the subject's letter, not
that: bench/RESULTS.md).
"""

from __future__ import annotations

import csv
import io
import itertools
import random
from dataclasses import dataclass
from pathlib import Path

from mcqtune.errors import UserError
from mcqtune.files import write_atomic

LETTERS = "ABCD"
EASY_ROWS = (480, 160)  # training and test rows of the demo sample
HARD_ROWS = (192, 160)  # --hard: few training rows

# subject -> (answer letter, topic words). Each subject's words appear only in its own questions.
SUBJECTS = {
    "astronomy": ("A", "恒星 行星 星系 彗星 月球 日食 黑洞 银河 轨道 望远镜 流星 光年".split()),
    "chemistry": ("A", "分子 原子 溶液 催化剂 氧化 酸碱 化合物 电子 元素 试剂 沉淀 晶体".split()),
    "geography": ("B", "河流 山脉 气候 平原 季风 沙漠 海峡 高原 盆地 降水 湖泊 冰川".split()),
    "medicine": ("B", "病毒 细菌 疫苗 血液 心脏 肝脏 抗体 症状 药物 手术 神经 免疫".split()),
    "history": ("C", "朝代 皇帝 战争 变法 起义 丝路 科举 诸侯 王朝 条约 考古 史书".split()),
    "economics": ("C", "市场 价格 通胀 税收 货币 供给 需求 利率 贸易 股票 成本 银行".split()),
    "music": ("D", "旋律 节奏 乐器 和声 琵琶 交响 歌剧 音阶 古筝 合唱 指挥 乐谱".split()),
    "sports": ("D", "足球 篮球 跑步 游泳 体操 冠军 裁判 比赛 球队 射箭 举重 马拉松".split()),
}
SUBJECT_NAMES = {"astronomy": "天文", "chemistry": "化学", "geography": "地理", "medicine": "医学",
                 "history": "历史", "economics": "经济", "music": "音乐", "sports": "体育"}
# The subject's name recurs through the question and options, as in exam papers grouped by subject: a
# strong, repeated cue that even a tiny model's attention can pick up.
QUESTION_TEMPLATES = (
    "【{s}】关于{s}中的{a}和{b}，下列{s}说法中正确的是",
    "【{s}】下列有关{s}里{a}与{b}的表述，哪一项符合{s}常识？",
    "【{s}】在{s}研究中，人们常常提到{a}和{b}，下列说法正确的是",
    "【{s}】以下关于{s}的{a}、{b}和{c}的描述，正确的一项是",
)
OPTION_TEMPLATES = ("{s}中{a}与{b}密切相关", "在{s}里{a}会影响{b}", "{s}上{a}是{b}的一部分",
                    "{s}中{a}和{b}没有联系", "{s}里{a}决定了{b}")

# A near-miss distractor borrows the vocabulary of a neighbouring subject whose answer is another letter.
NEAR_SUBJECT = {"astronomy": "geography", "geography": "astronomy", "chemistry": "medicine", "medicine": "chemistry",
                "history": "music", "music": "history", "economics": "sports", "sports": "economics"}


@dataclass(frozen=True)
class HardSettings:
    """How hard ``--hard`` makes the testbed; the defaults put one tiny model well between chance and 100%."""

    noise: float = 0.2  # share of training answers replaced by another letter
    a_share: float = 0.34  # share of training questions whose answer is A (the test file stays at a quarter)
    near_miss: float = 0.67  # share of the distractors written in the neighbouring subject's vocabulary


def make_question(rng: random.Random, subject: str) -> dict[str, str]:
    letter, words = SUBJECTS[subject]
    a, b, c = rng.sample(words, 3)
    name = SUBJECT_NAMES[subject]
    row = {"question": rng.choice(QUESTION_TEMPLATES).format(s=name, a=a, b=b, c=c)}
    for option in "ABCD":
        x, y = rng.sample(words, 2)
        row[f"option_{option}"] = rng.choice(OPTION_TEMPLATES).format(s=name, a=x, b=y)
    row["answer"] = letter
    row["subject"] = subject
    return row


def make_hard_question(rng: random.Random, subject: str, near_miss: float) -> dict[str, str]:
    letter, words = SUBJECTS[subject]
    near = SUBJECTS[NEAR_SUBJECT[subject]][1]
    a, b, c = rng.sample(words, 3)
    row = {"question": rng.choice(QUESTION_TEMPLATES).format(s=SUBJECT_NAMES[subject], a=a, b=b, c=c)}
    for option in "ABCD":
        vocabulary = near if option != letter and rng.random() < near_miss else words
        x, y = rng.sample(vocabulary, 2)
        row[f"option_{option}"] = rng.choice(OPTION_TEMPLATES).format(s=SUBJECT_NAMES[subject], a=x, b=y)
    return {**row, "answer": letter, "subject": subject}


def letter_counts(n: int, a_share: float) -> dict[str, int]:
    """Questions per answer letter: ``a_share`` of ``n`` for A, the rest as evenly as possible over B-D."""
    n_a = round(n * a_share)
    rest = [(n - n_a) // 3 + (i < (n - n_a) % 3) for i in range(3)]
    return dict(zip(LETTERS, [n_a, *rest]))


def hard_subjects(rng: random.Random, n: int, a_share: float) -> list[str]:
    """``n`` subjects whose letters follow ``letter_counts``; the two subjects of a letter alternate."""
    by_letter = {letter: [s for s, (own, _) in SUBJECTS.items() if own == letter] for letter in LETTERS}
    subjects = [by_letter[letter][i % 2] for letter, count in letter_counts(n, a_share).items() for i in range(count)]
    rng.shuffle(subjects)
    return subjects


def add_label_noise(rng: random.Random, rows: list[dict[str, str]], share: float) -> None:
    """Replace the answer of ``round(share * len(rows))`` rows by another letter (the options stay)."""
    for i in rng.sample(range(len(rows)), round(share * len(rows))):
        rows[i]["answer"] = rng.choice([letter for letter in LETTERS if letter != rows[i]["answer"]])


def generate_hard(n: int, seed: int, start_id: int = 0, settings: HardSettings = HardSettings(),
                  training: bool = True) -> list[dict[str, str]]:
    """``n`` hard questions; training rows get the letter skew and the label noise, test rows neither."""
    rng = random.Random(seed)
    subjects = hard_subjects(rng, n, settings.a_share if training else 0.25)
    rows = [{"ID": str(start_id + i), **make_hard_question(rng, subject, settings.near_miss)}
            for i, subject in enumerate(subjects)]
    if training:
        add_label_noise(rng, rows, settings.noise)
    return rows


def generate(n: int, seed: int, start_id: int = 0) -> list[dict[str, str]]:
    """``n`` questions, subjects in equal shares, shuffled; IDs run from ``start_id``."""
    rng = random.Random(seed)
    subjects = [name for _, name in zip(range(n), itertools.cycle(SUBJECTS))]
    rng.shuffle(subjects)
    rows = []
    for number, subject in enumerate(subjects):
        rows.append({"ID": str(start_id + number), **make_question(rng, subject)})
    return rows


def csv_text(rows: list[dict[str, str]], with_answer: bool = True) -> str:
    columns = ["ID", "question", "option_A", "option_B", "option_C", "option_D"]
    columns += ["answer", "subject"] if with_answer else ["subject"]
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return text.getvalue()


def write_sample(out_dir: str | Path, n_train: int = 480, n_test: int = 160, seed: int = 7,
                 hard: HardSettings | None = None) -> dict[str, Path]:
    """train.csv, test.csv (with answers) and test_no_answer.csv (shaped like a competition test file);
    ``hard`` writes the hard testbed with those settings instead. A file already there is replaced only by the
    same bytes (the same sample written again); any other is refused before anything is written."""
    out_dir = Path(out_dir)
    if hard is None:
        train, test = generate(n_train, seed), generate(n_test, seed + 1, start_id=n_train)
    else:
        train = generate_hard(n_train, seed, settings=hard)
        test = generate_hard(n_test, seed + 1, start_id=n_train, settings=hard, training=False)
    texts = {"train": csv_text(train), "test": csv_text(test), "test_no_answer": csv_text(test, with_answer=False)}
    paths = {name: out_dir / f"{name}.csv" for name in texts}
    for name, path in paths.items():
        if path.exists() and (not path.is_file() or path.read_bytes() != texts[name].encode("utf-8")):
            raise UserError(f"{path} already exists and is not this sample (another sample's, or a file of "
                            "yours); name another folder, or move it away first")
    for name, path in paths.items():
        write_atomic(path, texts[name])
    return paths
