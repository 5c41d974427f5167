"""Deterministic synthetic events, loaded with COPY.

Each day has its own random stream derived from (seed, day), so the same seed gives the same rows
for a day whatever range it was generated in. A small share of orders carry bad totals (missing or
not a number), as real payloads do.
"""

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta

import psycopg
import psycopg.errors

from pulsecart_cli import signals
from pulsecart_cli.dates import LAST_DAY
from pulsecart_cli.errors import UsageError
from pulsecart_cli.queries import one_row, query

# (event_type, cumulative probability)
EVENT_MIX = (
    ("product.viewed", 0.70),
    ("cart.item_added", 0.88),
    ("cart.abandoned", 0.95),
    ("order.placed", 1.00),
)
MISSING_TOTAL_SHARE = 0.02
BAD_TOTAL_SHARE = 0.01
BAD_TOTALS = ("N/A", "12,50", "", "free")
MICROSECONDS_PER_DAY = 86_400_000_000


@dataclass(frozen=True)
class SeedSpec:
    start: date
    days: int
    users: int
    events_per_day: int
    seed: int

    def __post_init__(self) -> None:
        for name in ("days", "users", "events_per_day"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be at least 1")
        if self.start.toordinal() + self.days - 1 > LAST_DAY.toordinal():
            raise UsageError(f"--days {self.days} from --start {self.start} runs past {LAST_DAY}, the last day accepted")


@dataclass(frozen=True)
class SeedResult:
    events: int
    days: int
    invalid_totals: int


def _payload(rng: random.Random, event_type: str) -> tuple[str, bool]:
    """The JSON payload, and whether it is an order with an invalid total. Built as text: this runs
    a million times a day of data, and json.dumps would be most of the cost."""
    if event_type == "product.viewed":
        return f'{{"product_id": "p{int(rng.random() * 5000):05d}"}}', False
    if event_type == "cart.item_added":
        return f'{{"product_id": "p{int(rng.random() * 5000):05d}", "quantity": {1 + int(rng.random() * 4)}}}', False
    if event_type == "cart.abandoned":
        return f'{{"cart_id": "c{rng.getrandbits(40):010x}"}}', False
    order = f'"order_id": "o{rng.getrandbits(40):010x}", "items": {1 + int(rng.random() * 5)}'
    roll = rng.random()
    if roll < MISSING_TOTAL_SHARE:
        return f"{{{order}}}", True
    if roll < MISSING_TOTAL_SHARE + BAD_TOTAL_SHARE:
        return f"{{{order}, {json.dumps({'total': rng.choice(BAD_TOTALS)})[1:-1]}}}", True
    return f'{{{order}, "total": {round(rng.uniform(5, 400), 2)}}}', False


def _uuid7_text(unix_ms: int, random_bits: int) -> str:
    """A version-7 UUID (time-ordered, RFC 9562): the primary key grows at its right edge as the
    consumer's would, instead of splitting pages all over the index."""
    value = (unix_ms << 80) | (0x7 << 76) | ((random_bits >> 62) & 0xFFF) << 64 | (0b10 << 62) | (
        random_bits & ((1 << 62) - 1))
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def day_rows(spec: SeedSpec, day: date) -> Iterator[tuple[str, bool]]:
    """Yield (copy_line, invalid_total) for one day's events, in timestamp order."""
    rng = random.Random(f"{spec.seed}:{day.isoformat()}")  # noqa: S311 - reproducible test data, not secrets
    random_ = rng.random
    offsets = sorted([int(random_() * MICROSECONDS_PER_DAY) for _ in range(spec.events_per_day)])
    prefix = day.isoformat()
    day_start_ms = (day - date(1970, 1, 1)).days * 86_400_000
    for offset in offsets:
        roll = random_()
        event_type = EVENT_MIX[0][0] if roll < EVENT_MIX[0][1] else next(
            name for name, threshold in EVENT_MIX if roll < threshold)
        user_id = f"u{int(spec.users * random_() ** 1.5):06d}"
        event_id = _uuid7_text(day_start_ms + offset // 1000, rng.getrandbits(74))
        payload, invalid = _payload(rng, event_type)
        seconds, micros = divmod(offset, 1_000_000)
        minutes, second = divmod(seconds, 60)
        hour, minute = divmod(minutes, 60)
        timestamp = f"{prefix} {hour:02d}:{minute:02d}:{second:02d}.{micros:06d}+00"
        yield f"{event_id}\t{user_id}\t{event_type}\t{timestamp}\t{payload}\n", invalid


def seed_events(conn: psycopg.Connection, spec: SeedSpec, chunk_rows: int = 1_000,
                refuse_foreign_events: bool = True) -> SeedResult:
    """Load the synthetic events and record the load. Refuses (writing nothing) an events table that holds
    events pulsecart did not seed: in production that table is the consumer's."""
    if refuse_foreign_events and one_row(conn.execute(query("seed.foreign_events")))[0]:
        raise UsageError("seed: the events table holds events pulsecart did not seed (the consumer's?): "
                         "nothing was written", hint="seed only an empty database or one seeded before")
    try:
        return _copy_events(conn, spec, chunk_rows)
    except psycopg.errors.UniqueViolation:
        raise UsageError(
            f"the days {spec.start}..{spec.start + timedelta(days=spec.days - 1)} already hold events from this"
            f" --seed ({spec.seed})", hint="pick another --seed or other days") from None


def _copy_events(conn: psycopg.Connection, spec: SeedSpec, chunk_rows: int) -> SeedResult:
    total = invalid_total = 0
    # psycopg's default writer, on this thread: its queued writer (a sending thread) was no faster here.
    with conn.transaction():
        with conn.cursor() as cur, cur.copy(query("seed.copy_events")) as copy:
            for offset in range(spec.days):
                buffer = []
                for line, invalid in day_rows(spec, spec.start + timedelta(days=offset)):
                    buffer.append(line)
                    invalid_total += invalid
                    if len(buffer) >= chunk_rows:
                        signals.check()  # a COPY's cancel is only read at its end
                        copy.write("".join(buffer))
                        total += len(buffer)
                        buffer.clear()
                copy.write("".join(buffer))
                total += len(buffer)
        conn.execute(query("seed.record_load"),
                     {"first_day": spec.start, "days": spec.days, "seed": spec.seed, "events": total})
    return SeedResult(events=total, days=spec.days, invalid_totals=invalid_total)
