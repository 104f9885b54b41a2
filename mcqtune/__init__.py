"""mcq-tune: fine-tune chat LLMs on single-choice (A/B/C/D) questions and write competition submissions.

The package is laid out by job; imports run one way, down this list (tests/test_layout.py enforces it):

    cli            the `mcq-tune` command: one subcommand per job (train, infer, ensemble, export, ...)
    demo           the CPU demo (trains and answers with a tiny model)
    ensemble/      fuse several runs' letter probabilities (mean, vote, fitted weights) into one submission
    reinforce/     GRPO from a correctness reward: rewards read by the answer parser, shuffled prompts, its trainer
    export/        adapter -> merged 16-bit weights, GGUF for llama.cpp / Ollama, an lm-eval task
    train/         the SFT run, its trainer, data, checkpoints and k-fold driver
    answering/     infer: letter scoring, generation and the answer parser, the cascade, letter bias
    generation/    what generating replies shares below the jobs: weights made for decoding (FP8)
    model/         loading models and tokenizers (Unsloth or transformers), LoRA, the chat template's answer slot
    reporting/     reports, charts, timing and memory meters, MFU
    runs/          run folders, locks, run identity (provenance), prediction stores, distributed helpers
    data/          the competition CSV contract, the one prompt builder, option orders, sample questions
    tiny/          tiny random models with the real Qwen2.5 tokenizer (tests and the demo, offline)
    errors, config_files   one-line errors for every command; the packaged YAML configs and chat templates
"""

__version__ = "0.9.0"
