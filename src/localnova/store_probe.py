"""The latency probe's part of the results store: its timings, and the ledger of its paid calls.

Mixed into `Store` (store.py), which owns the connection and its one-transaction writes. A
timing says how long one request took when the probe timed it (evaluate/latency_probe.py);
the ledger says which calls the probe paid for, each once: a timing measured again replaces
its row, a round reused from another run makes none, a warm-up call is paid but never timed.

Plain Python and sqlite3 only: no model code here.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass

from localnova.store_schema import now_iso

PROBE_TIMED = "timed"
PROBE_WARM_UP = "warm-up"


@dataclass(frozen=True)
class ProbeTiming:
    """One request of the latency probe: an arm's answer to one question, timed on its own."""

    model: str
    arm: str
    question_id: str
    round: int  # the question's repeat, 0 first
    position: int  # where the arm came in the round's random order, 0 first
    generation_key: str  # what was timed: backend identity + request
    latency_ms: float  # the one request's time (evaluate.latency_probe.request_time_ms)
    input_tokens: int
    output_tokens: int
    measured_at: str = ""  # when; "" for a timing not stored yet (then: now)
    measured_in_run: str = ""  # the run that made the request; "" for one not stored yet (then: this run)


@dataclass(frozen=True)
class ProbeCall:
    """One call the latency probe paid for (the latency_probe_calls ledger): a timed request,
    or a backend's untimed warm-up before a sitting's first timed request."""

    model: str
    kind: str  # PROBE_TIMED | PROBE_WARM_UP
    arm: str  # the timed arm; "" for a warm-up
    question_id: str  # the question whose request was sent
    round: int | None  # the timed request's round; None for a warm-up
    sitting: int | None  # a warm-up's: the run's n-th of its backend, 0 first; None when timed
    backend: dict[str, str]
    generation_key: str
    input_tokens: int
    output_tokens: int


class ProbeTables:
    """The Store's latency probe methods (see the module's docstring)."""

    connection: sqlite3.Connection
    run_id: str | None

    def _write(self, statements: list[tuple[str, tuple]]) -> None:
        raise NotImplementedError  # Store's: all statements in one transaction

    def _probe_timing_statement(self, t: ProbeTiming, backend: dict[str, str], now: str) -> tuple[str, tuple]:
        return (
            "INSERT OR REPLACE INTO latency_probe(run_id, model, arm, question_id, round, position, generation_key, "
            "backend_json, latency_ms, input_tokens, output_tokens, measured_at, measured_in_run) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                self.run_id,
                t.model,
                t.arm,
                t.question_id,
                t.round,
                t.position,
                t.generation_key,
                json.dumps(backend, sort_keys=True),
                t.latency_ms,
                t.input_tokens,
                t.output_tokens,
                t.measured_at or now,
                t.measured_in_run or self.run_id,
            ),
        )

    def _probe_call_statement(self, call: ProbeCall, now: str) -> tuple[str, tuple]:
        return (
            "INSERT INTO latency_probe_calls(run_id, model, kind, arm, question_id, round, sitting, backend_json, generation_key, "
            "input_tokens, output_tokens, made_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                self.run_id,
                call.model,
                call.kind,
                call.arm,
                call.question_id,
                call.round,
                call.sitting,
                json.dumps(call.backend, sort_keys=True),
                call.generation_key,
                call.input_tokens,
                call.output_tokens,
                now,
            ),
        )

    def save_probe_timing(self, timing: ProbeTiming, backend: dict[str, str]) -> None:
        """One probe request this run made and timed, committed as soon as it answers (like an
        answer on Bedrock): its timing, and its line in the ledger of paid calls, together."""
        now = now_iso()
        call = ProbeCall(
            timing.model,
            PROBE_TIMED,
            timing.arm,
            timing.question_id,
            timing.round,
            None,
            backend,
            timing.generation_key,
            timing.input_tokens,
            timing.output_tokens,
        )
        self._write([self._probe_timing_statement(timing, backend, now), self._probe_call_statement(call, now)])

    def save_probe_warm_up(self, call: ProbeCall) -> None:
        """A backend's untimed warm-up call, in the ledger of paid calls."""
        self._write([self._probe_call_statement(call, now_iso())])

    def save_probe_round(self, timings: list[ProbeTiming], backends: dict[str, dict[str, str]]) -> None:
        """A round another run measured (every arm of one question once), kept for this run in
        one transaction with its time and run: its calls were paid there, so nothing is added
        to the ledger. `backends` maps each arm to its backend identity."""
        now = now_iso()
        self._write([self._probe_timing_statement(t, backends[t.arm], now) for t in timings])

    def probe_calls(self, run_id: str | None = None) -> list[ProbeCall]:
        """Every call the probe paid for in a run, in the order made."""
        rows = self.connection.execute(
            "SELECT model, kind, arm, question_id, round, sitting, backend_json, generation_key, input_tokens, output_tokens "
            "FROM latency_probe_calls WHERE run_id=? ORDER BY rowid",
            (run_id or self.run_id,),
        )
        return [ProbeCall(*row[:6], json.loads(row[6]), *row[7:]) for row in rows]

    def probe_timings(self, run_id: str | None = None) -> list[ProbeTiming]:
        rows = self.connection.execute(
            "SELECT model, arm, question_id, round, position, generation_key, latency_ms, input_tokens, output_tokens, measured_at, "
            "measured_in_run FROM latency_probe WHERE run_id=? ORDER BY model, question_id, round, position",
            (run_id or self.run_id,),
        )
        return [ProbeTiming(*row) for row in rows]

    def probe_timings_of_model(self, model: str) -> list[tuple[str, ProbeTiming]]:
        """(run id, timing) of every probe request of `model` in any run of this study."""
        rows = self.connection.execute(
            "SELECT run_id, model, arm, question_id, round, position, generation_key, latency_ms, input_tokens, output_tokens, "
            "measured_at, measured_in_run FROM latency_probe WHERE model=? ORDER BY run_id, question_id, round, position",
            (model,),
        )
        return [(row[0], ProbeTiming(*row[1:])) for row in rows]
