"""The routing-policy registry's contract: every policy class declares what the router keeps for it and the
options it reads, and an option it does not declare is an error naming the ones it does."""

from __future__ import annotations

import pytest

from dynosim.router.policies import ALIASES, POLICIES, canonical_mode, check_policy_options, make_policy, \
    policy_options
from dynosim.router.router import Router


def declared(cls, attr):
    """``attr`` as declared on the class or a base (not an instance attribute, not a default guessed here)."""
    for klass in cls.__mro__:
        if attr in vars(klass):
            return vars(klass)[attr]
    raise AssertionError(f"{cls.__name__} does not declare {attr}")


@pytest.mark.parametrize("mode", sorted(POLICIES))
def test_every_policy_declares_the_contract(mode):
    cls = POLICIES[mode]
    assert isinstance(cls, type)
    assert declared(cls, "name") == mode
    assert type(declared(cls, "uses_overlap")) is bool
    assert type(declared(cls, "uses_load")) is bool
    options = declared(cls, "options")
    assert type(options) is tuple and all(type(k) is str for k in options)
    assert len(set(options)) == len(options)
    assert policy_options(mode) == options


@pytest.mark.parametrize("mode", sorted(POLICIES))
def test_the_router_keeps_what_the_policy_declares(mode):
    cls = POLICIES[mode]
    r = Router(mode, 2, 16)
    assert isinstance(r.policy, cls)
    assert r.track_load is cls.uses_load
    assert (r.indexer is not None) is cls.uses_overlap
    assert Router(mode, 2, 16, queue_threshold=1.0).track_load   # a queue needs the load whatever the policy


@pytest.mark.parametrize("mode", sorted(POLICIES))
def test_an_undeclared_option_is_an_error_naming_the_valid_ones(mode):
    valid = policy_options(mode)
    takes = f"it takes {', '.join(valid)}" if valid else "it takes none"
    with pytest.raises(ValueError) as err:
        check_policy_options(mode, ["no_such_option", *valid])
    assert str(err.value) == f"the {mode} router has no option no_such_option ({takes})"
    check_policy_options(mode, valid)          # every declared key is accepted
    make_policy(mode, seed=1)                  # and the policy builds with none


@pytest.mark.parametrize("alias", sorted(ALIASES))
def test_aliases_name_registered_policies(alias):
    mode = canonical_mode(alias)
    assert mode in POLICIES
    assert policy_options(alias) == POLICIES[mode].options


def test_unknown_mode_lists_the_modes():
    with pytest.raises(ValueError, match=r"unknown router mode 'kvv'; choose from \['device-aware-weighted'"):
        canonical_mode("kvv")
