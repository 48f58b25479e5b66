"""The engine settings (generator/engines/options.py EngineChoice, EngineSettings, BatchSize) are declared once and
checked alike in every config that carries them: EngineOptions, JudgeConfig, the GRPO judge reward's JudgeReward,
the pipeline recipe's ``engine:`` and, through its policy, reference and judge, EvalConfig."""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from align.rewards.judge import JudgeReward
from evaluation.evaluate import EvalConfig
from generator.engines.options import EngineOptions
from judge.config import JudgeConfig
from pipeline.recipe import Engines

WITH_MODEL = (EngineOptions, JudgeConfig, JudgeReward)
ALL = (*WITH_MODEL, Engines)


def test_each_field_has_one_declaration():
    for field in ("engine", "base_urls"):
        assert len({cls.model_fields[field].description for cls in ALL}) == 1, field
    assert len({cls.model_fields["model"].description for cls in WITH_MODEL}) == 1
    batched = (EngineOptions, JudgeConfig, Engines)
    assert len({cls.model_fields["batch_size"].description for cls in batched}) == 1
    assert [cls.model_fields["batch_size"].default for cls in batched] == [32, 64, 16]  # each config's own default
    assert "batch_size" not in JudgeReward.model_fields  # the reward judges a whole group in one call


@pytest.mark.parametrize("cls", ALL, ids=lambda cls: cls.__name__)
@pytest.mark.parametrize(("fields", "message"), [
    ({"engine": "os:system"}, "is not a class"),
    ({"engine": "bogus"}, "unknown engine 'bogus'"),
    ({"engine": "vllm", "base_urls": ["http://127.0.0.1:8000/v1"]}, "only used by the openai engine"),
    ({"base_urls": ["ftp://host/v1"]}, "is not an http(s)://host[:port] URL"),
])
def test_every_config_refuses_what_cannot_run(cls, fields, message):
    with pytest.raises(ValidationError, match=re.escape(message)):
        cls(**fields)


@pytest.mark.parametrize("cls", WITH_MODEL, ids=lambda cls: cls.__name__)
def test_every_config_refuses_a_model_folder_that_is_not_there_and_a_token(cls):
    """A judge config may name a folder an earlier stage of `rlaif run` writes: its folder is checked when its
    engine options are made (every route makes them before it reads the model), the others' at once."""
    from generator.models import ModelError

    with pytest.raises(ModelError, match="no such model folder"):
        config = cls(engine="transformers", model="./no-such-folder")
        config.engine_options()
    with pytest.raises(ValidationError, match="looks like an access token"):
        cls(engine="fake", model="hf_" + "x" * 34)


def test_eval_checks_its_judge_like_any_engine(tmp_path):
    options = EngineOptions(engine="fake")
    with pytest.raises(ValidationError, match="is not a class"):
        EvalConfig(prompts=tmp_path / "p.jsonl", out=tmp_path / "o", policy=options, reference=options,
                   judge={"engine": "os:system"})
