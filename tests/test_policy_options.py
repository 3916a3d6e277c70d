"""Each routing policy declares the options it reads, and an option it would ignore is refused."""

from __future__ import annotations

import inspect

import pytest

from dynosim.config import RunConfig
from dynosim.router.policies import POLICIES, check_policy_options, policy_options


@pytest.mark.parametrize("mode", sorted(POLICIES))
def test_declared_options_are_exactly_the_constructor_keywords(mode):
    """The declaration cannot drift from the code: every keyword the constructor takes is declared, and no more."""
    sig = inspect.signature(POLICIES[mode].__init__)
    keywords = {n for n, p in sig.parameters.items() if n not in ("self", "seed")
                and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
    assert set(policy_options(mode)) == keywords


def test_misspelled_or_foreign_option_names_the_valid_ones():
    with pytest.raises(ValueError, match=r"kv router has no option temprature \(it takes .*temperature"):
        check_policy_options("kv", ["temprature"])
    with pytest.raises(ValueError, match="round-robin router has no option variant .it takes none"):
        check_policy_options("rr", ["variant"])  # aliases resolve
    check_policy_options("thompson", ["variant", "params"])


def test_a_config_file_with_an_ignored_policy_option_is_invalid():
    with pytest.raises(ValueError, match="least-loaded router has no option variant"):
        RunConfig(router_mode="least-loaded", router={"policy_options": {"variant": "generalized"}})
    cfg = RunConfig(router_mode="thompson", router={"policy_options": {"variant": "generalized"}})
    assert cfg.router.policy_options == {"variant": "generalized"}
