"""Verifiable tasks as training data (``rlaif data``): GSM8K, easy arithmetic, MBPP-style code (tasks/build.py)."""
