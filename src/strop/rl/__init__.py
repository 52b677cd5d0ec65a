"""Reinforcement learning: the rollout engine and the rewards."""
