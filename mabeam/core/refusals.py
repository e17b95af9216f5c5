"""The server's permission refusals, turned into `PermissionError`s for whoever waits on them.

A NATS server that refuses a publish or a subscription by the connection's permissions sends
`-ERR 'Permissions Violation for Publish to "<subject>"'` (or `... for Subscription to ...`) and
keeps the connection; nats-py hands it to the error callback, not to the caller. A refused
request would then wait for its timeout. `Refusals.note` reads such an error, and:

- fails at once every request to that subject still waiting (`guard`): the waiting task is
  cancelled and the cancellation becomes the `PermissionError` inside `guard`;
- fails every waiting request when the refused subscription is the connection's own reply
  inbox (an identity connected without its inbox prefix): no reply can reach it;
- remembers the refused subject until the next reconnect, so a later publish or request to it
  is refused before it is sent (`check`), and `Connection.confirm` can report a refusal of what
  it sent before.

Only the subject is known of a violation, so every request waiting on that subject fails:
permissions are per subject, so all of them are refused alike. The error reaches us in lower
case, so subjects are compared without case.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import TypeVar

from mabeam.core.errors import PermissionError

__all__ = ["Refusals"]

T = TypeVar("T")

_VIOLATION = re.compile(r'permissions violation for (publish|subscription) to "([^"]+)"', re.I)


class Refusals:
    """The refusals one connection received, and the requests that wait on a subject."""

    __slots__ = ("_deaf", "_failed", "_inbox", "_refused", "_waiting")

    def __init__(self, inbox_prefix: str = "_INBOX") -> None:
        self._inbox = inbox_prefix.lower() + "."
        self._waiting: dict[asyncio.Task[object], str] = {}
        self._failed: dict[asyncio.Task[object], PermissionError] = {}
        self._refused: dict[str, PermissionError] = {}
        self._deaf: PermissionError | None = None

    def note(self, error: BaseException) -> PermissionError | None:
        """Read `error` from the error callback; the `PermissionError` it stands for, if any
        (after failing the requests waiting on its subject), else None."""
        found = _VIOLATION.search(str(error))
        if found is None:
            return None
        kind, subject = found.group(1).lower(), found.group(2).lower()
        what = "publish to" if kind == "publish" else "subscribe to"
        refusal = PermissionError(f"permission denied: {what} {{subject}}", subject)
        self._refused[subject] = refusal
        if kind == "publish":
            self._fail(refusal, lambda waited: waited.lower() == subject)
        elif subject.startswith(self._inbox):
            deaf = PermissionError(
                f"permission denied: no reply can arrive, as this connection may not subscribe"
                f" to its reply inbox {subject!r} (set inbox_prefix to its own); request to"
                " {subject}",
                subject,
            )
            self._deaf = deaf
            self._fail(deaf, lambda waited: True)
        return refusal

    def _fail(self, refusal: PermissionError, waits_on: Callable[[str], bool]) -> None:
        for task, waited in list(self._waiting.items()):
            if waits_on(waited) and task not in self._failed:
                self._failed[task] = refusal
                task.cancel()

    def check(self, subject: str) -> None:
        """Raise the `PermissionError` of `subject` when the server refused it already."""
        if self._refused:
            refusal = self._refused.get(subject.lower())
            if refusal is not None:
                raise _naming(refusal, subject)

    def forget(self) -> None:
        """Forget the refused subjects (after a reconnect: another server, maybe other rules)."""
        self._refused.clear()
        self._deaf = None

    async def guard(self, subject: str, pending: Awaitable[T]) -> T:
        """Await `pending`, a request to `subject`; `PermissionError` at once when the server
        refuses it, instead of its timeout."""
        try:
            self.check(subject)
            if self._deaf is not None:
                raise _naming(self._deaf, subject)
        except PermissionError:
            _discard(pending)
            raise
        task = asyncio.current_task()
        assert task is not None  # every caller runs in a task
        self._waiting[task] = subject
        try:
            return await pending
        except BaseException:
            refusal = self._failed.pop(task, None)
            if refusal is None:
                raise
            task.uncancel()
            raise _naming(refusal, subject) from None
        finally:
            self._waiting.pop(task, None)
            if self._failed.pop(task, None) is not None:  # the reply came first after all
                task.uncancel()


def _naming(refusal: PermissionError, subject: str) -> PermissionError:
    """The caller's own `PermissionError` for `refusal`, naming `subject` as it wrote it."""
    return PermissionError(
        refusal.message.format(subject=repr(subject)) + " refused by the server's permissions",
        subject,
    )


def _discard(pending: Awaitable[object]) -> None:
    close = getattr(pending, "close", None)
    if close is not None:
        close()  # a coroutine never awaited: close it rather than warn
