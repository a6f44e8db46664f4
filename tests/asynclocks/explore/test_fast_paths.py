"""The explorer's fast paths build exactly what the slow ones they replace would."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import weakref

from asynclocks._explore import _asyncio, _footprint


def _slots(handle: asyncio.Handle) -> dict[str, object]:
    return {name: getattr(handle, name) for name in type(handle).__slots__ if name != "__weakref__"}


def test_call_soon_builds_the_handle_handle_init_would() -> None:
    # The fast path is the one taken on every Python the project supports.
    assert _asyncio._FAST_HANDLES
    loop = _asyncio.ControlledLoop()
    context = contextvars.copy_context()

    def callback(*args: object) -> None:
        pass

    made = loop.call_soon(callback, 1, "two", context=context)
    expected = asyncio.Handle(callback, (1, "two"), loop, context)
    assert type(made) is asyncio.Handle
    assert _slots(made) == _slots(expected)

    # Without a context, each handle gets a fresh copy of the current one, as Handle does.
    variable: contextvars.ContextVar[int] = contextvars.ContextVar("variable")
    token = variable.set(7)
    try:
        first = loop.call_soon(callback)
        second = loop.call_soon(callback)
    finally:
        variable.reset(token)
    first_context = _slots(first)["_context"]
    assert isinstance(first_context, contextvars.Context)
    assert first_context is not _slots(second)["_context"]
    assert first_context[variable] == 7
    loop._callbacks.clear()
    loop.close()


def test_the_footprint_cache_keeps_alive_the_code_its_keys_name_by_id() -> None:
    # The cache is keyed by id(code): sound only while no key's id can name another object,
    # i.e. while every code object a key names stays alive with its entry.
    namespace: dict[str, object] = {}
    exec(  # a code object nothing else refers to once the namespace is gone
        "async def fresh(box):\n    box[0] += 1\n    await box[1]\n    box[0] += 1\n",
        namespace,
    )

    class Wait:
        def __await__(self):  # type: ignore[no-untyped-def]
            yield

    coroutine = namespace["fresh"]([0, Wait()])  # type: ignore[operator]
    before = _footprint.chain(coroutine)
    coroutine.send(None)
    after = _footprint.chain(coroutine)
    footprint = _footprint.step_footprint(before, after, finished=False, failed=False)
    assert footprint is not None
    assert after.ids[0] == id(coroutine.cr_code)
    code = weakref.ref(coroutine.cr_code)
    coroutine.close()
    del coroutine, before, after, namespace
    gc.collect()
    assert code() is not None


def test_a_task_step_that_raises_is_reported_as_handle_run_would() -> None:
    # The loop runs a task's handles without Handle._run's call; a callback bound to a task
    # that raises must still reach the exception handler, not the explorer.
    from asynclocks._explore._schedulers._base import ScheduleChooser

    async def scenario() -> None:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        loop.call_soon(task.set_name)  # type: ignore[arg-type]  # set_name() needs its argument
        await asyncio.sleep(0)

    loop = _asyncio.ControlledLoop()
    try:
        outcome = loop.run_schedule(scenario, ScheduleChooser(), False)
        assert outcome.kind is None, outcome.error
        [context] = loop._errors
        assert isinstance(context["exception"], TypeError)
        assert context["message"].startswith("Exception in callback ")
        assert isinstance(context["handle"], asyncio.Handle)
    finally:
        loop.close()
