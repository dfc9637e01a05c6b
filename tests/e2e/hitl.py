"""Answer human-in-the-loop tasks of a ``dag.test()`` run, as ops would in the Required Actions UI.

``dag.test()`` keeps a HITL task parked in ``awaiting_input`` until a response is recorded from
outside. :class:`HitlResponder` does what Airflow's HITL REST route does (record the chosen
options and inputs on the task's ``hitl_detail`` row, then resume the task through
``handle_event_submit``) from a background thread, for the tasks it is given answers for.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Answer = tuple[list[str], dict[str, Any]]


@dataclass
class HitlResponder:
    """Answers parked HITL tasks of ``dag_id``: ``answers[task_id]`` is ``(options, params)`` or a
    callable of the map index returning that. ``answered`` lists what was answered."""

    dag_id: str
    answers: dict[str, Answer | Callable[[int], Answer]]
    user: str = "ops-test"
    answered: list[tuple[str, int, list[str]]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> HitlResponder:
        # Import Airflow's models here, in the caller's thread: importing them from the responder
        # thread while dag.test() imports them too deadlocks on the import lock.
        import airflow.models.hitl
        import airflow.models.taskinstance
        import airflow.models.trigger
        import airflow.utils.session  # noqa: F401

        self._thread = threading.Thread(target=self._run, name="hitl-responder", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)
        assert not self.errors, f"the HITL responder failed: {self.errors[:3]}"

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            try:
                self._answer_parked()
            except Exception as exc:  # keep answering; the test sees the errors
                self.errors.append(f"{type(exc).__name__}: {exc}")

    def _answer_parked(self) -> None:
        from airflow._shared.timezones import timezone
        from airflow.models.hitl import HITLDetail
        from airflow.models.taskinstance import TaskInstance as TI
        from airflow.models.trigger import handle_event_submit
        from airflow.triggers.base import TriggerEvent
        from airflow.utils.session import create_session
        from airflow.utils.state import TaskInstanceState
        from sqlalchemy import select

        with create_session() as session:
            parked = session.scalars(
                select(TI).where(
                    TI.dag_id == self.dag_id,
                    TI.task_id.in_(list(self.answers)),
                    TI.state == TaskInstanceState.AWAITING_INPUT,
                )
            ).all()
            for ti in parked:
                detail = session.scalars(select(HITLDetail).where(HITLDetail.ti_id == ti.id)).one_or_none()
                if detail is None or detail.response_received:
                    continue
                answer = self.answers[ti.task_id]
                options, params = answer(ti.map_index) if callable(answer) else answer
                detail.responded_by = {"id": self.user, "name": self.user}
                detail.responded_at = timezone.utcnow()
                detail.chosen_options = options
                detail.params_input = params
                session.add(detail)
                handle_event_submit(TriggerEvent(detail.as_resume_event_payload()), task_instance=ti, session=session)
                self.answered.append((ti.task_id, ti.map_index, options))
            session.commit()
