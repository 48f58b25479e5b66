"""Numeric ranges that several configs share, stated once.

A seed reaches numpy: vLLM's ``set_random_seed`` (the seed of an engine) and transformers' ``set_seed``
(a trainer's) both call ``numpy.random.seed``, which takes only 0 .. 2**32 - 1 and raises otherwise,
after the model has loaded. So every seed a config hands to an engine or a trainer is checked here
first, with the other fields, before anything loads (tests/bad_inputs/cases.py: ``*-seed-negative``).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

SEED_MAX = 2**32 - 1  # numpy.random.seed's largest seed
Seed = Annotated[int, Field(ge=0, le=SEED_MAX)]
