"""Mixture-of-Experts fine-tuning: find a model's MoE blocks, router losses and health, expert-aware
LoRA targets, and Branch-Train-MiX (building an MoE from dense fine-tunes)."""
