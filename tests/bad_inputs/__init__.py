"""The bad-input corpus: every command given input it must refuse (tests/test_bad_inputs.py runs it)."""
