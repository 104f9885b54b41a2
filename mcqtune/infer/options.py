"""The options of `mcq-tune infer` (infer.py): the prompt's, the weights', and the answering run's own."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from mcqtune.core.engines import ATTENTION_CHOICES, GENERATION_ENGINES, KV_CACHE_DTYPES
from mcqtune.data.questions import PromptOptions
from mcqtune.errors import ConfigError, parse_with
from mcqtune.model.options import InferenceWeightOptions


# Dataclass fields (and --help) follow the bases in reverse: the prompt's, the weights', then these.
@dataclass
class InferArguments(InferenceWeightOptions, PromptOptions):
    test_file: str = field(default="", metadata={"help": "competition CSV (ID,question,option_A..D[,answer])"})
    model_path: str = field(default="", metadata={"help": "adapter directory, merged model or base model"})
    base_model_id: str | None = field(default=None, metadata={"help": "base model of an adapter (default: "
                                                                      "the one in adapter_config.json)"})
    output_file: str = field(default="submission.csv", metadata={"help": "where ID,answer goes"})
    output_dir: str | None = field(default=None, metadata={"help": "predictions, report, checkpoint "
                                                                   "(default: <output_file stem>_run/)"})
    mode: str = field(default="score", metadata={"help": "score | generate | reason (reasoning, then the answer: "
                                                         "core/reasoning.py)",
                                                 "choices": ["score", "generate", "reason"]})
    batch_size: int | None = field(default=None, metadata={"help": "default: from the GPU memory this process may "
                                                                   "use (see gpu_memory_gb)"})
    gpu_memory_gb: float | None = field(default=None, metadata={"help": "GPU memory to plan the batch for (default: "
                                                                        "the card's, within any process cap)"})
    max_new_tokens: int = field(default=48, metadata={"help": "generate mode: reply length limit"})
    repetition_penalty: float = field(default=1.1, metadata={"help": "generate and reason modes"})
    temperature: float = field(default=0.0, metadata={"help": "reason mode: 0 (default) for greedy replies; above 0 "
                                                              "samples them, seeded per batch by --seed (the same "
                                                              "run resumes to the same replies)"})
    seed: int = field(default=0, metadata={"help": "reason mode with temperature > 0: the sampling seed"})
    samples: int = field(default=1, metadata={"help": "reason mode, self-consistency: up to N sampled replies per "
                                                      "question (needs --temperature > 0), answered by the vote of "
                                                      "their letters; a question stops once its leading letter can "
                                                      "no longer lose, and a tie goes to the higher closing letter "
                                                      "probability. predictions.csv's vote column has the counts "
                                                      "(mcq-tune traces: N replies per question, seeds --seed + k, "
                                                      "every distinct one that reaches the label kept)"})
    generation_engine: str = field(default="generate", metadata={
        "help": "reason mode: generate (model.generate, padded batches) | continuous (transformers' continuous "
                "batching: paged key/value cache, CUDA graphs; greedy replies equal generate's in the CPU test, "
                "GPU kernels may differ; faster on a GPU: bench/RESULTS.md; needs --backend hf, "
                "--repetition_penalty 1.0 and one process) | nf4 (the same, the 4-bit weights and an unmerged "
                "adapter read by one fused dequantise-and-multiply kernel at each decoding step: core/nf4.py; "
                "needs a CUDA GPU and --load_in_4bit true) | fp8 (the same, after the adapter is merged and every "
                "decoder linear layer is held in FP8 for decoding: core/fp8.py; needs a GPU with FP8 tensor "
                "cores, RTX 4090 / H100 / H200; what it costs and changes: bench/RESULTS.md)",
        "choices": list(GENERATION_ENGINES)})
    paged_attention: str = field(default="auto", metadata={
        "help": "reason mode with a paged engine (continuous, nf4, fp8): how replies attend. auto (varlen where the "
                "model allows it, else sdpa) | "
                "varlen (each reply's queries read only its own cache, in one Triton kernel of this project: "
                "core/varlen.py; on a CPU the same arithmetic in torch; its cost: bench/RESULTS.md) | sdpa "
                "(transformers' paged SDPA: every query of a step against every reply's cache, through a dense "
                "mask; for models with sliding-window layers, which varlen refuses)",
        "choices": list(ATTENTION_CHOICES)})
    kv_cache_dtype: str = field(default="auto", metadata={
        "help": "reason mode with a paged engine and varlen attention: what the key/value cache is kept in. auto "
                "(the model's own type) | fp8 (e4m3, unscaled: twice the replies at once in the same memory; keys "
                "and values rounded to 8 bits, so replies can differ from auto's; on a GPU, one with FP8: RTX 4090 / "
                "H100 / H200; what it costs and changes: docs/reasoning.md)",
        "choices": list(KV_CACHE_DTYPES)})
    async_batching: bool = field(default=False, metadata={
        "help": "reason mode with a paged engine and varlen attention, on a CUDA GPU: prepare each decoding step "
                "on the CPU while the GPU computes the one before (transformers' async batching); each reply is "
                "planned with one more token of cache. Off by default until measured: docs/reasoning.md"})
    max_reasoning_tokens: int = field(default=1024, metadata={"help": "reason mode: the most tokens a reply may "
                                                                      "take; a reply cut there is closed and its "
                                                                      "letter scored (counted in report.json)"})
    permutations: int = field(default=1, metadata={"help": "score mode: average over N cyclic option orders (1-4)"})
    share_prefix: bool = field(default=True, metadata={"help": "score mode: compute the prompt start shared by all "
                                                              "questions once (same answers, less compute; "
                                                              "bench/RESULTS.md)"})
    debias_letters: bool = field(default=False, metadata={"help": "score mode: divide out the model's preference "
                                                                    "for some letters, estimated from the four cyclic "
                                                                    "option orders of debias_sample test questions "
                                                                    "(PriDe); report.json shows both distributions"})
    debias_sample: int = field(default=64, metadata={"help": "questions the letter prior is estimated on"})
    rescore: str | None = field(default=None, metadata={"help": "cascade: a finished run of this test file with "
                                                                "letter probabilities on every row (a score-mode run; "
                                                                "run folder or predictions.csv); answer only its "
                                                                "least confident rows, keep its other answers"})
    rescore_fraction: float = field(default=0.2, metadata={"help": "with --rescore: the share of rows (smallest "
                                                                   "margin between the top two letters) answered "
                                                                   "again"})
    allow_bare_predictions: bool = field(default=False, metadata={"help": "with --rescore: accept a "
                                                                       "predictions.csv without its run's report.json "
                                                                       "(what it answered cannot be checked)"})
    prompt_mismatch_ok: bool = field(default=False, metadata={"help": "answer with prompt settings other than the "
                                                                    "adapter was trained with (refused otherwise; "
                                                                    "left at their defaults, the training run's are "
                                                                    "used)"})
    partial_folds: bool = field(default=False, metadata={"help": "--model_path of a k-fold folder whose plan is not "
                                                               "finished: answer with its finished folds (report.json "
                                                               "lists them) instead of refusing"})
    ensemble: list[str] = field(default_factory=list, metadata={"help": "more adapter directories to average "
                                                                        "(score mode)"})
    resume: bool = field(default=True, metadata={"help": "continue from the checkpoint of an identical run"})
    encoding: str | None = field(default=None, metadata={"help": "CSV encoding if not UTF-8 (gb18030, big5)"})
    number_rows: bool = field(default=False, metadata={"help": "the test file has no ID column: use row numbers "
                                                                 "0..N-1 as IDs (check that the competition expects "
                                                                 "that)"})

    @property
    def reasoning(self) -> bool:
        return self.mode == "reason"

    @property
    def run_dir(self) -> Path:
        if self.output_dir:
            return Path(self.output_dir)
        out = Path(self.output_file)
        return out.with_name(out.stem + "_run")


def make_parser():
    from trl import TrlParser

    return TrlParser((InferArguments,))


def parse_args(argv: Sequence[str] | None) -> InferArguments:
    (args,) = parse_with(make_parser(), argv, ConfigError)
    return args
