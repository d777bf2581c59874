"""Dependencies whose internals we read are pinned to what is tested, and refuse loudly when they change."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from cluster.run_state import check_compatible
from common.config import load_config
from common.errors import CheckpointError
from learner import optim_state

ROOT = Path(__file__).resolve().parents[2]


def requirement(name: str):
    tomllib = pytest.importorskip("tomllib")
    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    found = [Requirement(r) for r in project["dependencies"] if Requirement(r).name == name]
    assert len(found) == 1
    return found[0]


def test_deepspeed_is_pinned_to_the_tested_minor_release() -> None:
    import deepspeed
    from packaging.version import Version

    spec = requirement("deepspeed").specifier
    tested = Version(optim_state.TESTED_DEEPSPEED)
    assert Version(deepspeed.__version__) in spec, "the installed DeepSpeed is the one the tests run"
    assert Version(f"{tested.major}.{tested.minor}.0") in spec
    assert Version(f"{tested.major}.{tested.minor + 1}.0") not in spec, "no untested minor release"
    assert Version(f"{tested.major}.{tested.minor - 1}.0") not in spec


class RenamedInternals:
    """A DeepSpeed optimizer wrapper of another release: its fp32 masters are no longer where we read them."""

    def __init__(self) -> None:
        self.optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))])
        self.fp32_master_partitions = [torch.zeros(2)]


def test_a_wrapper_without_the_attributes_we_read_is_refused_not_saved_without_masters() -> None:
    with pytest.raises(CheckpointError, match=r"RenamedInternals: it has none of .* tested with deepspeed 0\.19\.x"):
        optim_state.capture(RenamedInternals())
    plain = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))])
    assert optim_state.capture(plain)["masters"] == []  # ZeRO 0 in fp32: the torch optimizer is all there is


@pytest.mark.parametrize(
    ("override", "was"),
    [("learner.world_size=2", "learner.world_size 1"), ("learner.zero_stage=3", "learner.zero_stage 2")],
)
def test_resume_with_another_learner_layout_says_why_and_what_to_do(tmp_path: Path, override: str, was: str) -> None:
    saved = yaml.safe_load(yaml.safe_dump(load_config().model_dump(mode="json")))
    with pytest.raises(CheckpointError) as info:
        check_compatible(saved, load_config(None, [override, "learner.groups_per_step=16"]), tmp_path / "step-00000004")
    message = str(info.value)
    assert f"it was {was}" in message
    assert "resuming with another world size or ZeRO stage is not supported" in message
    assert f"model.path={tmp_path / 'step-00000004' / 'model'}" in message
