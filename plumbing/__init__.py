"""Ground-floor plumbing every layer may import: run directories, hashing, atomic writes,
batching and chat helpers. It imports no stage (constitution, prompts, generator, judge,
align, rlaif), so no stage reaches into another stage's module for plumbing."""
