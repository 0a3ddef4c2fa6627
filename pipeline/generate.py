"""The embedded default data: a deterministic synthetic weekly sales series.

Each series (a store or product) follows one demand law of the three features:

    expected units = prev * carryover * lift(discount) * bump(weeks) * (level / prev) ** reversion

    lift(d) = 1 + lift_max * (1 - exp(-d / lift_scale))        deeper discounts help less and less
    bump(w) = 1 + holiday_bump * exp(-w / holiday_reach)        demand rises as a holiday nears

and the observed units are that times multiplicative noise with mean one, so
the expected value given the features is exactly `expected_units`. Last week's
units become this week's `prev_week_sales`; the weak pull towards `level`
keeps every series bounded. The defaults agree with the four rows of the
chapter's Table 8.1 within 3%.
"""

from __future__ import annotations

import csv
import datetime as dt
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .schema import FEATURES, SERIES_COLUMN, TARGET, TIME_COLUMN

if TYPE_CHECKING:  # numpy is imported where it is used: the command line reads the defaults without it
    import numpy as np

# Weeks of the year (ISO) with a shopping holiday: New Year, Easter, summer sale,
# Black Friday, Christmas.
HOLIDAY_WEEKS = (1, 14, 27, 47, 51)
BURN_IN_WEEKS = 26


@dataclass(frozen=True)
class DemandLaw:
    lift_max: float = 0.42
    lift_scale: float = 20.0  # percent
    holiday_bump: float = 0.18
    holiday_reach: float = 1.5  # weeks
    carryover: float = 0.89
    reversion: float = 0.05
    level: float = 40_000.0  # units

    def expected_units(
        self, prev: float | np.ndarray, discount: float | np.ndarray, weeks: float | np.ndarray
    ) -> np.ndarray | np.float64:
        import numpy as np  # here, not at the top: the command line reads the defaults without numpy

        prev = np.maximum(np.asarray(prev, dtype=float), 1.0)
        lift = 1 + self.lift_max * (1 - np.exp(-np.asarray(discount, dtype=float) / self.lift_scale))
        bump = 1 + self.holiday_bump * np.exp(-np.asarray(weeks, dtype=float) / self.holiday_reach)
        return prev * self.carryover * lift * bump * (self.level / prev) ** self.reversion


@dataclass(frozen=True)
class GeneratorConfig:
    seed: int = 7
    series: int = 6
    weeks: int = 156
    start: str = "2023-01-02"  # a Monday
    noise: float = 0.06  # typical relative error of one week's sales
    promo_rate: float = 0.13  # chance per week that a campaign starts
    law: DemandLaw = DemandLaw()


def weeks_to_next_holiday(monday: dt.date) -> int:
    """Whole weeks from this week to the next holiday week (0 in a holiday week)."""
    for ahead in range(60):
        year, week, _ = (monday + dt.timedelta(weeks=ahead)).isocalendar()
        if week in HOLIDAY_WEEKS:
            return ahead
    raise AssertionError("no holiday within a year")


def generate(config: GeneratorConfig = GeneratorConfig()) -> list[dict[str, int | str]]:
    """Return the rows as a list of dicts, oldest week first, series interleaved."""
    import numpy as np

    rng = np.random.default_rng(config.seed)
    start = dt.date.fromisoformat(config.start)
    first = start - dt.timedelta(weeks=BURN_IN_WEEKS)
    n = config.weeks + BURN_IN_WEEKS
    mondays = [first + dt.timedelta(weeks=t) for t in range(n)]
    to_holiday = np.array([weeks_to_next_holiday(m) for m in mondays], dtype=float)

    rows: list[dict[str, int | str]] = []
    for s in range(config.series):
        # Each series has its own promotion habits and noise.
        promo_rate = config.promo_rate * rng.uniform(0.6, 1.4)
        typical_depth = rng.uniform(20, 70)
        noise = config.noise * rng.uniform(0.7, 1.3)
        discount = np.zeros(n)
        t = 0
        while t < n:
            near_holiday = to_holiday[t] <= 2
            if rng.random() < promo_rate * (2.0 if near_holiday else 1.0):
                length = int(rng.integers(1, 4))
                depth = float(np.clip(np.round(rng.normal(typical_depth, 12)), 5, 90))
                discount[t : t + length] = depth
                t += length
            else:
                t += 1
        units = config.law.level * np.exp(rng.normal(0, 0.3))
        for t in range(n):
            prev = units
            mean = config.law.expected_units(prev, discount[t], to_holiday[t])
            # Log-normal noise scaled so that its mean is exactly one.
            units = float(np.round(mean * np.exp(rng.normal(0, noise) - noise**2 / 2)))
            if t >= BURN_IN_WEEKS:
                rows.append(
                    {
                        "prev_week_sales": int(prev),
                        "discount_fraction": int(discount[t]),
                        "weeks_to_next_holidays": int(to_holiday[t]),
                        "units_sold": int(units),
                        TIME_COLUMN: mondays[t].isoformat(),
                        SERIES_COLUMN: f"store-{s + 1:02d}",
                    }
                )
    rows.sort(key=lambda r: (r[TIME_COLUMN], r[SERIES_COLUMN]))
    return rows


def write_csv(rows: Iterable[dict[str, Any]], path: str | os.PathLike[str]) -> None:
    columns = [*FEATURES, TARGET, TIME_COLUMN, SERIES_COLUMN]
    with open(path, "w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
