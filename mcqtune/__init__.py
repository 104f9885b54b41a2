"""mcq-tune: fine-tune chat LLMs on single-choice (A/B/C/D) questions and write competition submissions.

The package's jobs stand side by side over a shared core; imports run one way, down this list
(tests/test_layout.py enforces it, and that no job imports another):

    cli/           the `mcq-tune` command: one module per subcommand, its main(argv) and its printing
    demo           the CPU demo (trains and answers with a tiny model)
    infer/ train/ grpo/ ensemble/ export/    the jobs, side by side
    training/      what SFT and GRPO share: options, starting a run, the validation split, checkpoints, trainer pieces
    core/          what every job shares: letter scoring, the reply parser, reasoning replies and their engines
                   (generate, continuous batching, FP8 weights), batch planning, the letter prior
    model/         loading models and tokenizers (Unsloth or transformers), LoRA, the chat template's answer slot,
                   merged 16-bit weights and their model card
    reporting/     reports, charts, timing and memory meters, MFU, run comparison, train/test shift
    runs/          run folders, locks, run identity (provenance), prediction stores, distributed helpers
    data/          the competition CSV contract, the one prompt builder, option orders, sample questions
    tiny/          tiny random models with the real Qwen2.5 tokenizer (tests and the demo, offline)
    errors, config_files   one-line errors for every command; the packaged YAML configs and chat templates
"""

__version__ = "0.9.0"
