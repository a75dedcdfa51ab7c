"""What runs training around the model: the env driver, config checks, setup, checkpoints, logging, torchrun."""
