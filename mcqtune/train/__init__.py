"""Training (`mcq-tune train`): the options, the training rows, the SFT trainer, sealed checkpoints, one run in
its folder, and the k-fold driver that runs each fold in its own process."""
