"""Policy evaluation (``rlaif eval``): a trained policy against its start model under the constitution judge,
win rate with intervals (evaluation/evaluate.py, evaluation/winrate.py)."""
