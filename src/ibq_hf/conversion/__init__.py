"""Strict converters for the official SEED-Voken IBQ checkpoints."""
