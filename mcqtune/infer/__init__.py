"""Answering a test file (`mcq-tune infer`): letter scoring, generation read by the answer parser, the
cascade, letter-bias correction, the run's outputs."""
