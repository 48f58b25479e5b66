"""Publishing (``rlaif publish``): a judge run as a Hub dataset with a dataset card (publish/upload.py,
publish/card.py)."""
