"""Wake a thread that waits for an offline execution or job to end as soon as it ends.

The offline engine polls, as Step Functions and SageMaker's clients do: :class:`OfflineEngine`
asks moto for the execution's status, and a ``.sync`` task asks the local backend for its job's.
Each poll sleeps between asks, so an execution used to be seen as ended up to a poll later
(the engine's interval from 0.01 s doubling to 0.1 s, a job's 0.05 s; over
``tests/test_offline_scripted.py`` and ``tests/test_framework_matrix.py``, 200 executions,
polling every 3 ms instead took 50.3 s to 47.2 s). Here the sleep is a wait
that the end itself cuts short: whoever ends an execution or a job calls :meth:`Wakeup.notify`,
and a waiter that saw nothing ended yet (its :meth:`Wakeup.mark`, taken before it asked) wakes
at once. The poll interval stays the bound, so a notification missed (an end that nobody
announces, such as a test double's scripted status) only costs what it cost before.
"""

from __future__ import annotations

import threading


class Wakeup:
    """A count of ends, and a condition to wait on for the next one."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._count = 0

    def mark(self) -> int:
        """The ends so far; pass it to :meth:`wait` after looking at the status."""
        with self._condition:
            return self._count

    def notify(self) -> None:
        """Something ended: wake every waiter."""
        with self._condition:
            self._count += 1
            self._condition.notify_all()

    def wait(self, mark: int, timeout: float) -> bool:
        """Sleep up to ``timeout`` seconds, less if anything ended since ``mark``: true if
        something did (at once if it already had), false once ``timeout`` has passed."""
        with self._condition:
            return self._condition.wait_for(lambda: self._count != mark, timeout)


#: Notified when moto's interpreter ends an execution (:func:`smtrain.local.sfn_sagemaker.serve_sagemaker`
#: hooks it), whatever its status; :meth:`smtrain.local.engine.OfflineEngine.wait` waits on it.
EXECUTION_ENDED = Wakeup()

#: Notified when a local training or tuning job reaches a terminal status; a ``.sync`` task
#: waits on it between its describe calls.
JOB_ENDED = Wakeup()
