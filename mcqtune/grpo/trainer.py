"""TRL's GRPOTrainer, fitted to the house: generation from infer.py's prompt ids, validation by infer.py's
scorer (or by reasoning replies, read as infer.py --mode reason reads them), rollout speed measured.

Import this module only after ``model.loading.select_backend`` (Unsloth must be imported before trl).
"""

from __future__ import annotations

import contextlib
import time

import pandas as pd
from trl import GRPOTrainer

from mcqtune.data.questions import PromptStyle
from mcqtune.model.prompts import encode_prompts
from mcqtune.core.scoring import accuracy
from mcqtune.training.trainer import KeepAdapterDtype, PhaseTimes, eager_forward, log_evaluation, scoring_metrics


class MCQGRPOTrainer(KeepAdapterDtype, PhaseTimes, GRPOTrainer):
    def __init__(self, *args, prompt_ids: dict[str, list[int]], val_frame: pd.DataFrame | None,
                 prompt_style: PromptStyle, max_prompt_tokens: int, stop_ids, opened: bool = False,
                 rollout_engine: str = "generate", **kwargs):
        super().__init__(*args, **kwargs)
        self.rollout_engine = rollout_engine
        self.kernel_calls = {"fused": 0, "bitsandbytes": 0}
        self.prompt_ids = prompt_ids
        self.val_frame = val_frame
        self.prompt_style = prompt_style
        self.max_prompt_tokens = max_prompt_tokens
        self.stop_ids, self.opened = list(stop_ids), opened
        self.rollout_seconds = 0.0
        self.rollout_tokens = 0

    def _tokenize_prompts(self, prompts: list):
        """The ids infer.py would give each prompt (encode_prompt: the template rendered once, a long question
        shortened, never the options), looked up by the prompt text the dataset carries."""
        return [list(self.prompt_ids[p]) for p in prompts], None, {}

    def _generate_single_turn(self, prompt_ids, *args, **kwargs):
        """The rollouts, timed; with rollout_engine nf4 through the fused kernel (core/nf4.py), with continuous
        through continuous batching (``continuous_rollouts``)."""
        from mcqtune.core.nf4 import fused_nf4

        started = time.perf_counter()
        with fused_nf4(self.model, "rollout_engine") if self.rollout_engine == "nf4" else contextlib.nullcontext() \
                as calls:
            if self.rollout_engine == "continuous":
                completion_ids, logprobs = self.continuous_rollouts(prompt_ids), None
            else:
                completion_ids, logprobs = super()._generate_single_turn(prompt_ids, *args, **kwargs)
        for path, count in (calls or {}).items():
            self.kernel_calls[path] += count
        self.rollout_seconds += time.perf_counter() - started
        self.rollout_tokens += sum(len(ids) for ids in completion_ids)
        return completion_ids, logprobs

    def continuous_rollouts(self, prompt_ids: list[list[int]]) -> list[list[int]]:
        """Each prompt's reply through continuous batching with varlen attention, from the policy as it is (its LoRA
        unmerged), sampled as TRL's generation config says; like TRL's own, a reply keeps its stop token. The seed
        comes from torch's generator, which the trainer seeds and a resumed run restores: every step samples
        afresh, and a resumed run as the uninterrupted one."""
        import torch

        from mcqtune.core.continuous import continuous_replies
        from mcqtune.core.engines import GRPO_REMEDIES

        config, model = self.generation_config, self.accelerator.unwrap_model(self.model)
        seed = int(torch.randint(2**31 - 1, (1,)).item())
        if torch.cuda.is_available():
            torch.cuda.empty_cache()  # the cache is planned from the memory left: the training step's is free now
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                return continuous_replies(model, self.processing_class, prompt_ids, config.max_new_tokens,
                                          self.eos_token_ids, temperature=config.temperature or 0.0, seed=seed,
                                          attention="varlen", top_p=config.top_p, top_k=config.top_k or 0,
                                          remedies=GRPO_REMEDIES)
        finally:
            model.train(was_training)

    def rollout_summary(self) -> dict:
        return {"rollout_engine": self.rollout_engine,
                "rollout_kernel_calls": self.kernel_calls if self.rollout_engine == "nf4" else None,
                "rollout_seconds": round(self.rollout_seconds, 2), "rollout_tokens": self.rollout_tokens,
                "rollout_tokens_per_second": round(self.rollout_tokens / self.rollout_seconds, 1)
                if self.rollout_seconds else None}

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval"):
        """Validation accuracy: letter scoring for direct replies; greedy reasoning replies for reasoning ones."""
        if self.val_frame is None or not len(self.val_frame):
            return {}
        was_training = self.model.training
        self.model.eval()
        try:
            if self.prompt_style.reasoning:
                metrics = self.reasoning_metrics(metric_key_prefix)
            else:
                metrics = scoring_metrics(self, self.val_frame, self.prompt_style, self.max_prompt_tokens,
                                          metric_key_prefix)
        finally:
            self.model.train(was_training)
        return log_evaluation(self, metrics)

    def reasoning_metrics(self, prefix: str) -> dict:
        """Greedy reasoning replies to the validation rows, read after the reasoning or closed and scored (infer.py
        --mode reason with temperature 0): ``<prefix>_accuracy`` and the share of closed replies."""
        from mcqtune.core.reasoning import ReplyOptions, reasoner

        started = time.time()
        frame, tokenizer = self.val_frame.reset_index(drop=True), self.processing_class
        prompts = encode_prompts(tokenizer, frame, self.prompt_style, self.max_prompt_tokens)
        paged = self.rollout_engine == "continuous"
        options = ReplyOptions(max_reasoning_tokens=self.args.max_completion_length, seed=self.args.seed,
                               generation_engine="continuous" if paged else "generate",
                               paged_attention="varlen" if paged else "sdpa")
        answer = reasoner(self.model, tokenizer, frame, prompts, options, self.stop_ids, self.opened)
        size = self.args.per_device_eval_batch_size
        records = []
        with eager_forward():
            for start in range(0, len(frame), size):
                records += answer(list(range(start, min(start + size, len(frame)))))
        seconds = time.time() - started
        return {f"{prefix}_accuracy": accuracy([r["answer"] for r in records], list(frame["answer"])),
                f"{prefix}_closed_share": sum(r["source"] == "reason_closed" for r in records) / len(records),
                f"{prefix}_runtime": round(seconds, 3),
                f"{prefix}_samples_per_second": round(len(records) / seconds, 2)}
