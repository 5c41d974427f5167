"""Deterministic synthetic events, loaded with COPY.

Each day has its own random stream derived from (seed, day), so the same seed gives the same rows
for a day whatever range it was generated in. A small share of orders carry bad totals (missing or
not a number), as real payloads do.
"""

import json
import random
import uuid
from dataclasses import dataclass
from datetime import date, timedelta

import psycopg
import psycopg.errors

from pulsecart_cli.dates import day_bounds
from pulsecart_cli.errors import UsageError
from pulsecart_cli.queries import query

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


@dataclass(frozen=True)
class SeedResult:
    events: int
    days: int
    invalid_totals: int


def _payload(rng: random.Random, event_type: str) -> tuple[str, bool]:
    """The JSON payload, and whether it is an order with an invalid total."""
    product = f"p{rng.randrange(5000):05d}"
    if event_type == "product.viewed":
        return json.dumps({"product_id": product}), False
    if event_type == "cart.item_added":
        return json.dumps({"product_id": product, "quantity": rng.randint(1, 4)}), False
    if event_type == "cart.abandoned":
        return json.dumps({"cart_id": f"c{rng.getrandbits(40):010x}"}), False
    order = {"order_id": f"o{rng.getrandbits(40):010x}", "items": rng.randint(1, 5)}
    roll = rng.random()
    if roll < MISSING_TOTAL_SHARE:
        return json.dumps(order), True
    if roll < MISSING_TOTAL_SHARE + BAD_TOTAL_SHARE:
        order["total"] = rng.choice(BAD_TOTALS)
        return json.dumps(order), True
    order["total"] = round(rng.uniform(5, 400), 2)
    return json.dumps(order), False


def day_rows(spec: SeedSpec, day: date):
    """Yield (copy_line, invalid_total) for one day's events, in timestamp order."""
    rng = random.Random(f"{spec.seed}:{day.isoformat()}")
    day_start, _ = day_bounds(day)
    offsets = sorted(rng.randrange(MICROSECONDS_PER_DAY) for _ in range(spec.events_per_day))
    for offset in offsets:
        roll = rng.random()
        event_type = next(name for name, threshold in EVENT_MIX if roll < threshold)
        user_id = f"u{int(spec.users * rng.random() ** 1.5):06d}"
        event_id = uuid.UUID(int=rng.getrandbits(128), version=4)
        payload, invalid = _payload(rng, event_type)
        timestamp = (day_start + timedelta(microseconds=offset)).isoformat()
        yield f"{event_id}\t{user_id}\t{event_type}\t{timestamp}\t{payload}\n", invalid


def validate(spec: SeedSpec) -> None:
    for name in ("days", "users", "events_per_day"):
        if getattr(spec, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1")


def seed_events(conn: psycopg.Connection, spec: SeedSpec, chunk_rows: int = 20_000) -> SeedResult:
    validate(spec)
    try:
        return _copy_events(conn, spec, chunk_rows)
    except psycopg.errors.UniqueViolation:
        raise UsageError(
            f"the days {spec.start}..{spec.start + timedelta(days=spec.days - 1)} already hold events from this"
            f" --seed ({spec.seed})", hint="pick another --seed or other days") from None


def _copy_events(conn: psycopg.Connection, spec: SeedSpec, chunk_rows: int) -> SeedResult:
    total = invalid_total = 0
    with conn.transaction(), conn.cursor() as cur, cur.copy(query("seed.copy_events")) as copy:
        for offset in range(spec.days):
            buffer = []
            for line, invalid in day_rows(spec, spec.start + timedelta(days=offset)):
                buffer.append(line)
                invalid_total += invalid
                if len(buffer) >= chunk_rows:
                    copy.write("".join(buffer))
                    total += len(buffer)
                    buffer.clear()
            copy.write("".join(buffer))
            total += len(buffer)
    return SeedResult(events=total, days=spec.days, invalid_totals=invalid_total)
