"""Train through train_sft.run and print, on every rank, a checksum of the LoRA weights after training and
the validation accuracies it logged.

    torchrun --nproc_per_node 2 bench/ddp_checksum.py --config demo-cpu.yaml ...

Data-parallel training is right only if every rank ends with the same weights (same checksum) and the
Trainer wrapped the model in DistributedDataParallel; validation is right only if every rank logged the same
accuracies (each scores a share of the questions; all get the whole table).
"""
import logging
import os
import sys
from mcqtune.model.loading import peek_backend, select_backend
backend = select_backend(peek_backend(sys.argv[1:]))
from mcqtune.train import sft as train_sft  # noqa: E402
from mcqtune.train import options as train_options  # noqa: E402
from mcqtune.train import trainer as mcq_trainer  # noqa: E402
from mcqtune.config_files import resolve_config_argv  # noqa: E402  (after select_backend: Unsloth, if chosen, must be imported before trl/transformers)
orig_train = mcq_trainer.MCQTrainer.train
def train(self, *a, **k):
    out = orig_train(self, *a, **k)
    s = sum(float(p.detach().double().sum()) for n, p in self.model.named_parameters() if 'lora' in n)
    print(f"RANK {os.environ.get('RANK')} lora-sum {s:.10f} wrapped {type(self.model_wrapped).__name__}", flush=True)
    accuracies = [e["eval_accuracy"] for e in self.state.log_history if "eval_accuracy" in e]
    print(f"RANK {os.environ.get('RANK')} eval-accuracies {accuracies}", flush=True)
    return out
mcq_trainer.MCQTrainer.train = train
logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", force=True)
argv = sys.argv[1:]
s, t = train_options.make_parser().parse_args_and_config(resolve_config_argv(argv))
train_sft.run(s, t, backend)
