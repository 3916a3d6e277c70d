"""Mocker engine types by the name a config gives (``MockerArgs.engine_type``).

Adding an engine type (SGLang's scheduler, TRT-LLM's) is a module implementing
``contract.Scheduler`` and one line here; the simulator builds every worker's
scheduler from this table.
"""

from __future__ import annotations

from dynosim.engines.mocker.contract import Scheduler
from dynosim.engines.mocker.scheduler import VllmScheduler

SCHEDULERS: dict[str, type[Scheduler]] = {
    "vllm": VllmScheduler,
}


def scheduler_class(engine_type: str) -> type[Scheduler]:
    """The scheduler class of ``engine_type``; ``ValueError`` listing the known ones otherwise."""
    try:
        return SCHEDULERS[engine_type]
    except KeyError:
        raise ValueError(f"unknown engine_type {engine_type!r}; choose from {', '.join(sorted(SCHEDULERS))} "
                         "(Dynamo's mocker also has sglang: not modelled here yet)") from None
