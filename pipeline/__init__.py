"""The pipeline: one recipe -> every stage's run directory under one root, resumably (pipeline/loop.py),
each stage declared once in the stage registry (pipeline/stages.py), ending in report.md (pipeline/report.py)."""
