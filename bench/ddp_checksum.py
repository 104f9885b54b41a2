"""Train through train_sft.main and print, on every rank, a checksum of the LoRA weights after training.

    torchrun --nproc_per_node 2 bench/ddp_checksum.py --config configs/demo-cpu.yaml ...

Data-parallel training is right only if every rank ends with the same weights (same checksum) and the
Trainer wrapped the model in DistributedDataParallel.
"""
import os
import sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
import train_sft
backend = train_sft.select_backend(train_sft.peek_backend(sys.argv[1:]))
import mcq_trainer
orig_train = mcq_trainer.MCQTrainer.train
def train(self, *a, **k):
    out = orig_train(self, *a, **k)
    s = sum(float(p.detach().double().sum()) for n, p in self.model.named_parameters() if 'lora' in n)
    print(f"RANK {os.environ.get('RANK')} lora-sum {s:.10f} wrapped {type(self.model_wrapped).__name__}", flush=True)
    return out
mcq_trainer.MCQTrainer.train = train
argv = sys.argv[1:]
s, t = train_sft.make_parser().parse_args_and_config(argv)
train_sft.main(s, t, backend)
