//! Tensors, checkpoints and model configs.
