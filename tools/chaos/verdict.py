"""The verdict: every planned record against what the output and dead-letter topics hold.

Per id: how many times it reached the input topic, how many predictions and dead letters it
got, and whether each prediction's probability is the one the model artifact gives offline
(sklearn's predict_proba on the store's features at the event's own time, not the service's
folded scorer) to 1e-9.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import msgspec
from aiokafka.structs import ConsumerRecord

from events.dead_letter import ERROR_KIND
from events.schema import decode_prediction, parse_event
from features.user import UserFeatures
from model.artifact import PurchaseModel
from tools.chaos.load import ID_PATTERN, PlannedEvent

TOLERANCE = 1e-9
EXAMPLES = 5  # ids kept per kind of problem, to look up in the instances' logs


class _EventId(msgspec.Struct):
    event_id: str


_decode_id = msgspec.json.Decoder(_EventId).decode


@dataclass
class Verdict:
    guarantee: str
    planned: int = 0
    planned_invalid: int = 0
    input_records: int = 0
    not_delivered: int = 0  # planned but never in the input topic: the load's fault, not the service's
    predictions: int = 0
    missing: int = 0  # valid events in the input with no prediction
    duplicate_predictions: int = 0  # predictions beyond one per input record
    duplicated_events: int = 0
    wrong_probabilities: int = 0
    max_probability_error: float = 0.0
    unexpected_predictions: int = 0  # for ids that are not valid planned events, or unreadable
    dead_letters: int = 0
    dead_letters_missing: int = 0
    duplicate_dead_letters: int = 0
    dead_letters_wrong_kind: int = 0
    unexpected_dead_letters: int = 0  # of valid events, or with no planned id in them
    examples: dict[str, list[str]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    # When each duplicated or missing record was sent (epoch s), to tell which fault it belongs to.
    duplicated_sent_at: list[float] = field(default_factory=list, repr=False)
    missing_sent_at: list[float] = field(default_factory=list, repr=False)

    @property
    def passed(self) -> bool:
        return not self.failures

    def note(self, problem: str, event_id: str) -> None:
        kept = self.examples.setdefault(problem, [])
        if len(kept) < EXAMPLES:
            kept.append(event_id)


def expected_probabilities(plan: list[PlannedEvent], model: PurchaseModel, features: Mapping[int, UserFeatures]) -> dict[str, float]:
    valid = [event for event in plan if event.pages is not None]
    pages = [event.pages for event in valid if event.pages is not None]
    users = [features.get(event.user_id) for event in valid]  # None: a cold-start user
    # The event's timestamp as the service reads it from the same bytes.
    event_at_s = [parse_event(event.value).timestamp.timestamp() for event in valid]
    probabilities = model.predict_with_pipeline(pages, users, event_at_s).tolist()
    return {event.event_id: probability for event, probability in zip(valid, probabilities, strict=True)}


def judge(
    guarantee: str, plan: list[PlannedEvent], expected: Mapping[str, float], model_version: str,
    inputs: Iterable[ConsumerRecord], outputs: Iterable[ConsumerRecord], dead_letters: Iterable[ConsumerRecord],
) -> Verdict:
    verdict = Verdict(guarantee, planned=len(plan), planned_invalid=sum(e.pages is None for e in plan))
    by_id = {event.event_id: event for event in plan}
    sent: Counter[str | None] = Counter()
    sent_at: dict[str | None, float] = {}
    for record in inputs:
        event_id = _record_id(record)
        sent[event_id] += 1
        sent_at.setdefault(event_id, record.timestamp / 1000)
    verdict.input_records = sum(sent.values())
    predicted = _check_predictions(verdict, by_id, expected, model_version, outputs)
    lettered = _check_dead_letters(verdict, by_id, dead_letters)
    for event_id, event in by_id.items():
        copies = sent[event_id]
        if copies == 0:
            verdict.not_delivered += 1
            verdict.note("not delivered", event_id)
            continue
        got = lettered[event_id] if event.pages is None else predicted[event_id]
        if got == 0:
            verdict.missing_sent_at.append(sent_at[event_id])
            if event.pages is None:
                verdict.dead_letters_missing += 1
            else:
                verdict.missing += 1
            verdict.note("missing", event_id)
        elif got > copies:
            verdict.duplicated_sent_at.append(sent_at[event_id])
            verdict.note("duplicated", event_id)
            if event.pages is None:
                verdict.duplicate_dead_letters += got - copies
            else:
                verdict.duplicate_predictions += got - copies
                verdict.duplicated_events += 1
    verdict.failures = _failures(verdict)
    return verdict


def _record_id(record: ConsumerRecord) -> str | None:
    found = ID_PATTERN.search(record.value or b"")
    return found.group().decode() if found else None


def _check_predictions(
    verdict: Verdict, by_id: Mapping[str, PlannedEvent], expected: Mapping[str, float], model_version: str,
    outputs: Iterable[ConsumerRecord],
) -> Counter[str]:
    predicted: Counter[str] = Counter()
    for record in outputs:
        verdict.predictions += 1
        try:
            prediction = decode_prediction(record.value)
        except (msgspec.DecodeError, TypeError):
            verdict.unexpected_predictions += 1
            verdict.note("unreadable prediction", repr(record.value[:80]))
            continue
        event = by_id.get(prediction.event_id)
        if event is None or event.pages is None:
            verdict.unexpected_predictions += 1
            verdict.note("unexpected prediction", prediction.event_id)
            continue
        predicted[prediction.event_id] += 1
        error = abs(prediction.purchase_probability - expected[prediction.event_id])
        verdict.max_probability_error = max(verdict.max_probability_error, error)
        if not error <= TOLERANCE or prediction.user_id != event.user_id or prediction.model_version != model_version:
            verdict.wrong_probabilities += 1
            verdict.note("wrong prediction", prediction.event_id)
    return predicted


def _check_dead_letters(verdict: Verdict, by_id: Mapping[str, PlannedEvent], dead_letters: Iterable[ConsumerRecord]) -> Counter[str]:
    lettered: Counter[str] = Counter()
    for record in dead_letters:
        verdict.dead_letters += 1
        event_id = _record_id(record)
        event = by_id.get(event_id) if event_id else None
        if event_id is None or event is None or event.pages is not None:
            verdict.unexpected_dead_letters += 1
            verdict.note("unexpected dead letter", event_id or repr((record.value or b"")[:80]))
            continue
        lettered[event_id] += 1
        kind = dict(record.headers).get(ERROR_KIND, b"").decode(errors="replace")
        if kind != event.invalid_kind:
            verdict.dead_letters_wrong_kind += 1
            verdict.note(f"dead-lettered as {kind}, not {event.invalid_kind}", event_id)
    return lettered


def _failures(v: Verdict) -> list[str]:
    found = []
    checks = [
        (v.not_delivered, "planned events never reached the input topic (a load generator problem)"),
        (v.missing, "valid events have no prediction"),
        (v.wrong_probabilities, f"predictions off the offline recomputation by more than {TOLERANCE:g}, or for the wrong user or model"),
        (v.unexpected_predictions, "predictions for no valid event sent"),
        (v.dead_letters_missing, "invalid records were not dead-lettered"),
        (v.dead_letters_wrong_kind, "dead letters carry the wrong dlq.error.kind"),
        (v.unexpected_dead_letters, "dead letters of valid events, or of no record sent"),
    ]
    if v.guarantee == "exactly_once":
        checks += [
            (v.duplicate_predictions, "duplicate predictions under exactly_once"),
            (v.duplicate_dead_letters, "duplicate dead letters under exactly_once"),
        ]
    for count, what in checks:
        if count:
            found.append(f"{count:,} {what}")
    return found
