"""Publishing (``rlaif publish``): a judge run as a Hub dataset with a dataset card (options: publish/config.py;
the repository folder and the push: publish/upload.py; the card: publish/card.py)."""
