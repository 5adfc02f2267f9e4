"""Typed stage params: every profile validates; unknown keys, bad types and bad ranges fail naming group and key."""
import copy

import pytest
import yaml

from presto_lib.config import PROFILES, find_root, render_profile
from presto_lib.stages.params import GROUPS, ParamsError, coerced_params, typed_params

ROOT = find_root()


@pytest.fixture(scope="module")
def cpu():
    return render_profile("cpu", ROOT)


def _with(P, group, key, value):
    """A copy of P with P[group]...[key] = value (key may be dotted)."""
    Q = copy.deepcopy(P)
    d = Q[group]
    *path, last = key.split(".")
    for k in path:
        d = d[k]
    d[last] = value
    return Q


@pytest.mark.parametrize("profile", PROFILES)
def test_every_profile_validates_unchanged(profile):
    P = render_profile(profile, ROOT)
    assert set(P) - {"profile"} == set(GROUPS)
    assert coerced_params(P) == P


def test_unknown_key_is_rejected_naming_group_and_key(cpu):
    with pytest.raises(ParamsError, match=r"params group 'base': unknown key 'stepz' \(base\.stepz\)"):
        typed_params(_with(cpu, "base", "stepz", 10))
    with pytest.raises(ParamsError, match=r"'presto_s\.train': unknown key 'lr' \(presto_s\.train\.lr\)"):
        typed_params(_with(cpu, "presto_s", "train.lr", 1e-4))
    with pytest.raises(ParamsError, match="unknown params group 'basee'"):
        typed_params({**cpu, "basee": {}})


def test_missing_key_is_an_error_defaults_live_in_the_profiles(cpu):
    P = copy.deepcopy(cpu)
    del P["presto_l"]["lr"]
    with pytest.raises(ParamsError, match=r"missing key 'lr' \(presto_l\.lr\)"):
        typed_params(P)


def test_numbers_are_coerced(cpu):
    T = typed_params(_with(_with(cpu, "presto_s", "train.lr_fake", "3e-4"), "base", "steps", 30.0))
    assert T["presto_s"].train.lr_fake == 3e-4 and isinstance(T["presto_s"].train.lr_fake, float)
    assert T["base"].steps == 30 and isinstance(T["base"].steps, int)
    T = typed_params(yaml.safe_load(yaml.safe_dump(_with(cpu, "base", "lr", "1e-4"))))   # YAML reads 1e-4 as str
    assert T["base"].lr == 1e-4
    assert coerced_params(_with(cpu, "vae", "steps", "40"))["vae"]["steps"] == 40


@pytest.mark.parametrize("group,key,value,msg", [
    ("base", "steps", 30.7, r"base\.steps: expected an integer, got 30\.7"),
    ("base", "steps", 0, r"base\.steps: 0 is below its minimum 1"),
    ("presto_l", "batch_size", -2, r"presto_l\.batch_size: -2 is below its minimum 1"),
    ("presto_s", "train.iterations", 0, r"presto_s\.train\.iterations: 0 is below its minimum 1"),
    ("base", "lr", "fast", r"base\.lr: expected a number, got 'fast'"),
    ("base", "lr", 0.0, r"base\.lr: 0\.0 must be greater than 0"),
    ("base", "ema_decay", 1.5, r"base\.ema_decay: 1\.5 is above its maximum 1"),
    ("base", "sample_posterior", "yes", r"base\.sample_posterior: expected true/false"),
    ("base", "steps", True, r"base\.steps: expected a number, got True"),
    ("presto_l", "eval_steps", [4, 8.5], r"presto_l\.eval_steps\[1\]: expected an integer"),
])
def test_bad_values_fail_naming_group_and_key(cpu, group, key, value, msg):
    with pytest.raises(ParamsError, match=msg):
        typed_params(_with(cpu, group, key, value))
