#!/usr/bin/env python3
"""Write the five tuning (development) data sets next to this script.

Standalone: numpy and the standard library only, fixed seeds, so running it
twice gives byte-identical files.  Every file has the columns

    week,series,prev_week_sales,discount_fraction,weeks_to_next_holidays,units_sold

sorted by week then series, every series present every week, and
prev_week_sales equal to the series' units_sold of the previous week (the first
week's value comes from a simulated burn-in period).  See README.md.

Usage:  python bench/tuning/make_tuning.py
"""
import datetime as dt
import os

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
COLUMNS = ("week", "series", "prev_week_sales", "discount_fraction",
           "weeks_to_next_holidays", "units_sold")
BURN_IN = 12          # simulated weeks before the first written week
WEEKS_PER_YEAR = 365.25 / 7


# --------------------------------------------------------------------------
# calendar
# --------------------------------------------------------------------------
def easter(year):
    """Gregorian Easter Sunday (anonymous Gregorian algorithm)."""
    a, b, c = year % 19, year // 100, year % 100
    d, e = b // 4, b % 4
    f = (b + 8) // 25
    g = (b - f + 1) // 3
    h = (19 * a + b - d - g + 15) % 30
    i, k = c // 4, c % 4
    l = (32 + 2 * e + 2 * i - h - k) % 7
    m = (a + 11 * h + 22 * l) // 451
    month = (h + l - 7 * m + 114) // 31
    day = (h + l - 7 * m + 114) % 31 + 1
    return dt.date(year, month, day)


def nth_weekday(year, month, weekday, n):
    """n-th `weekday` (Mon=0) of a month."""
    first = dt.date(year, month, 1)
    return first + dt.timedelta(days=(weekday - first.weekday()) % 7 + 7 * (n - 1))


HOLIDAYS = {
    "valentines": lambda y: dt.date(y, 2, 14),
    "super_bowl": lambda y: nth_weekday(y, 2, 6, 2),        # 2nd Sunday of Feb
    "easter": easter,
    "mothers_day": lambda y: nth_weekday(y, 5, 6, 2),       # 2nd Sunday of May
    "midsummer": lambda y: dt.date(y, 6, 21),
    "july_4": lambda y: dt.date(y, 7, 4),
    "back_to_school": lambda y: dt.date(y, 8, 25),
    "thanksgiving": lambda y: nth_weekday(y, 11, 3, 4),     # 4th Thursday of Nov
    "black_friday": lambda y: nth_weekday(y, 11, 3, 4) + dt.timedelta(days=1),
    "christmas": lambda y: dt.date(y, 12, 25),
}


def monday_of(day):
    return day - dt.timedelta(days=day.weekday())


def calendar(first_monday, n_weeks, holiday_names):
    """Mondays, weeks to the next holiday week (0 in it), week of year."""
    mondays = [first_monday + dt.timedelta(weeks=t) for t in range(n_weeks)]
    years = range(mondays[0].year - 1, mondays[-1].year + 2)
    hol_weeks = sorted({monday_of(HOLIDAYS[h](y)) for h in holiday_names for y in years})
    to_next = np.empty(n_weeks, dtype=int)
    j = 0
    for t, m in enumerate(mondays):
        while hol_weeks[j] < m:
            j += 1
        to_next[t] = (hol_weeks[j] - m).days // 7
    woy = np.array([m.timetuple().tm_yday / 7.0 for m in mondays])
    return mondays, to_next, woy


def campaigns(rng, n_weeks, gap=(3, 14), lengths=(1, 2, 3, 4, 5, 6),
              length_p=None, depths=(5, 60)):
    """Discount percent per week: campaigns of 1-6 weeks, 0% in between.

    Returns (discount, week_in_campaign) where week_in_campaign is 1 in the
    first promoted week, 2 in the second, ... and 0 outside campaigns.
    """
    disc = np.zeros(n_weeks, dtype=int)
    k_in = np.zeros(n_weeks, dtype=int)
    t = int(rng.integers(0, gap[1]))
    while t < n_weeks:
        length = int(rng.choice(lengths, p=length_p))
        depth = int(5 * rng.integers(depths[0] // 5, depths[1] // 5 + 1))
        stop = min(t + length, n_weeks)
        disc[t:stop] = depth
        k_in[t:stop] = np.arange(1, stop - t + 1)
        t = stop + int(rng.integers(gap[0], gap[1] + 1))
    return disc, k_in


def yearly(woy, amplitude, peak_week):
    return 1.0 + amplitude * np.cos(2 * np.pi * (woy - peak_week) / WEEKS_PER_YEAR)


# --------------------------------------------------------------------------
# output
# --------------------------------------------------------------------------
def write_csv(name, mondays, names, discount, to_next, units):
    """units: (n_series, BURN_IN + n_weeks) including burn-in; writes the rest."""
    order = np.argsort(names)
    lines = [",".join(COLUMNS)]
    for t in range(BURN_IN, len(mondays)):
        week = mondays[t].isoformat()
        for i in order:
            lines.append(f"{week},{names[i]},{units[i, t - 1]},{discount[i, t]},"
                         f"{to_next[t]},{units[i, t]}")
    path = os.path.join(HERE, name)
    with open(path, "w", newline="\n") as fh:
        fh.write("\n".join(lines) + "\n")
    return path


def check_units(units):
    assert np.all(np.isfinite(units)) and np.all(units >= 0)
    return units.astype(np.int64)


# --------------------------------------------------------------------------
# 1. elastic_mix: per-product discount elasticity, pre-holiday ramp
# --------------------------------------------------------------------------
def elastic_mix():
    rng = np.random.default_rng(101)
    n_out, n_ser = 156, 12
    T = n_out + BURN_IN
    mondays, to_next, woy = calendar(dt.date(2020, 1, 6) - dt.timedelta(weeks=BURN_IN), T,
                                     ["valentines", "easter", "mothers_day",
                                      "black_friday", "christmas"])
    names = [f"prod-{i + 1:02d}" for i in range(n_ser)]
    base = np.exp(rng.uniform(np.log(30), np.log(1500), n_ser))
    # log-lift per unit of discount fraction: 0.1 (barely reacts) .. 2.4 (x2 at 30% off)
    beta = rng.permutation(np.linspace(0.1, 2.4, n_ser))
    # bump by weeks to the holiday: ramps up over 5 weeks, peaks the week
    # before, small in the holiday week itself, nothing otherwise
    profile = np.zeros(T)
    ramp = {5: 0.06, 4: 0.18, 3: 0.38, 2: 0.65, 1: 1.0, 0: 0.12}
    for w, v in ramp.items():
        profile[to_next == w] = v
    hol_scale = rng.uniform(0.2, 0.8, n_ser)
    season_amp = rng.uniform(0.0, 0.15, n_ser)
    season_peak = rng.uniform(0, WEEKS_PER_YEAR, n_ser)
    disc = np.zeros((n_ser, T), dtype=int)
    units = np.zeros((n_ser, T))
    for i in range(n_ser):
        disc[i], _ = campaigns(rng, T)
        z = np.zeros(T)                      # persistent log-level deviation
        for t in range(1, T):
            z[t] = 0.6 * z[t - 1] + rng.normal(0, 0.08)
        mean = (base[i] * yearly(woy, season_amp[i], season_peak[i])
                * (1 + hol_scale[i] * profile)
                * np.exp(beta[i] * disc[i] / 100.0)
                * np.exp(z + rng.normal(0, 0.12, T)))
        units[i] = rng.poisson(mean)
    return write_csv("elastic_mix.csv", mondays, names, disc, to_next, check_units(units))


# --------------------------------------------------------------------------
# 2. growth_regime: growth, then a permanent competitor-driven drop
# --------------------------------------------------------------------------
def growth_regime():
    rng = np.random.default_rng(202)
    n_out, n_ser = 182, 6
    T = n_out + BURN_IN
    mondays, to_next, woy = calendar(dt.date(2019, 7, 1) - dt.timedelta(weeks=BURN_IN), T,
                                     ["easter", "back_to_school", "black_friday", "christmas"])
    names = [f"store-{i + 1:02d}" for i in range(n_ser)]
    base = rng.uniform(800, 6000, n_ser)
    growth = rng.uniform(0.002, 0.006, n_ser)             # ~11-37 % a year
    hol = np.zeros(T)
    for w, v in {2: 0.25, 1: 0.6, 0: 0.9}.items():
        hol[to_next == w] = v
    hol_scale = rng.uniform(0.15, 0.45, n_ser)
    season_amp = rng.uniform(0.05, 0.2, n_ser)
    promo_units = rng.uniform(0.006, 0.02, n_ser) * base   # units per discount point
    disc = np.zeros((n_ser, T), dtype=int)
    units = np.zeros((n_ser, T))
    # opening weeks: last third of the history, at least 8 weeks before its
    # end, never in the 3 weeks after a holiday (keeps it apart from the
    # post-holiday fall), one distinct week per store
    candidates = [t for t in range(BURN_IN + (2 * n_out) // 3, T - 8)
                  if not (to_next[t - 3:t] == 0).any()]
    shift_at = rng.choice(candidates, n_ser, replace=False)
    shift_to = rng.uniform(0.65, 0.80, n_ser)               # 20-35 % drop
    t_idx = np.arange(T)
    for i in range(n_ser):
        disc[i], _ = campaigns(rng, T)
        level = base[i] * (1 + growth[i]) ** t_idx
        # the drop lands over two weeks (opening week half of it), then stays
        shift = np.ones(T)
        shift[shift_at[i]] = 1 - 0.5 * (1 - shift_to[i])
        shift[shift_at[i] + 1:] = shift_to[i]
        ar = np.zeros(T)                      # additive, autocorrelated residual
        for t in range(1, T):
            ar[t] = 0.5 * ar[t - 1] + rng.normal(0, 0.04 * base[i])
        mult = (yearly(woy, season_amp[i], 50.0) * (1 + hol_scale[i] * hol)
                * np.exp(rng.normal(0, 0.05, T)))
        value = level * shift * mult + promo_units[i] * disc[i] + ar
        units[i] = np.maximum(np.round(value), 0)
    return write_csv("growth_regime.csv", mondays, names, disc, to_next, check_units(units))


# --------------------------------------------------------------------------
# 3. pantry_loading: promotion lift fades, then post-promotion dip
# --------------------------------------------------------------------------
def pantry_loading():
    rng = np.random.default_rng(303)
    n_out, n_ser = 140, 8
    T = n_out + BURN_IN
    mondays, to_next, woy = calendar(dt.date(2021, 2, 1) - dt.timedelta(weeks=BURN_IN), T,
                                     ["super_bowl", "easter", "july_4", "thanksgiving",
                                      "christmas"])
    names = [f"sku-{i + 1:02d}" for i in range(n_ser)]
    base = np.exp(rng.uniform(np.log(100), np.log(2000), n_ser))
    beta = rng.uniform(1.6, 3.0, n_ser)          # first-week lift exp(beta*d)-1
    fade = rng.uniform(0.4, 0.65, n_ser)         # lift multiplier per extra promo week
    payback = rng.uniform(0.4, 0.75, n_ser)      # share of extra units paid back later
    dip_weeks = rng.integers(2, 4, n_ser)        # 2 or 3 weeks of depressed sales
    hol = np.zeros(T)
    for w, v in {1: 0.5, 0: 1.0}.items():
        hol[to_next == w] = v
    hol_scale = rng.uniform(0.1, 0.35, n_ser)
    disc = np.zeros((n_ser, T), dtype=int)
    units = np.zeros((n_ser, T))
    for i in range(n_ser):
        disc[i], k_in = campaigns(rng, T, gap=(4, 12), depths=(10, 50),
                                  length_p=[0.1, 0.2, 0.25, 0.2, 0.15, 0.1])
        w = {2: np.array([0.6, 0.4]), 3: np.array([0.5, 0.3, 0.2])}[int(dip_weeks[i])]
        baseline = (base[i] * yearly(woy, 0.08, rng.uniform(0, WEEKS_PER_YEAR))
                    * (1 + hol_scale[i] * hol) * np.exp(rng.normal(0, 0.08, T)))
        debt = np.zeros(T + 4)        # units that will be missing in future weeks
        extra_total = 0.0
        for t in range(T):
            if k_in[t] > 0:
                lift = (np.exp(beta[i] * disc[i, t] / 100.0) - 1) * fade[i] ** (k_in[t] - 1)
                extra = baseline[t] * lift * np.exp(rng.normal(0, 0.1))
                extra_total += extra
                mean = baseline[t] + extra - debt[t]
            else:
                mean = baseline[t] - debt[t]
            mean = max(mean, 0.15 * baseline[t])
            units[i, t] = rng.poisson(mean)
            ended = k_in[t] > 0 and (t + 1 >= T or k_in[t + 1] == 0)
            if ended:
                debt[t + 1:t + 1 + len(w)] += payback[i] * extra_total * w
                extra_total = 0.0
    return write_csv("pantry_loading.csv", mondays, names, disc, to_next, check_units(units))


# --------------------------------------------------------------------------
# 4. intermittent: slow movers, discount raises the chance of a sale
# --------------------------------------------------------------------------
def intermittent():
    rng = np.random.default_rng(404)
    n_out, n_ser = 120, 30
    T = n_out + BURN_IN
    mondays, to_next, woy = calendar(dt.date(2020, 9, 7) - dt.timedelta(weeks=BURN_IN), T,
                                     ["mothers_day", "black_friday", "christmas"])
    names = [f"item-{i + 1:02d}" for i in range(n_ser)]
    p0 = rng.uniform(0.06, 0.45, n_ser)          # chance of any sale in a normal week
    gamma = rng.uniform(2.0, 5.0, n_ser)         # logit shift per unit discount fraction
    p_bulk = rng.uniform(0.08, 0.3, n_ser)       # a sale is a multi-unit order
    bulk_mean = rng.uniform(2.0, 7.0, n_ser)
    small_mean = rng.uniform(0.0, 0.6, n_ser)
    hol = np.where(to_next <= 1, 0.7, np.where(to_next <= 3, 0.3, 0.0))
    disc = np.zeros((n_ser, T), dtype=int)
    units = np.zeros((n_ser, T))
    for i in range(n_ser):
        disc[i], _ = campaigns(rng, T, gap=(5, 20))
        u = np.zeros(T)                           # slowly drifting popularity
        for t in range(1, T):
            u[t] = 0.85 * u[t - 1] + rng.normal(0, 0.25)
        logit = np.log(p0[i] / (1 - p0[i])) + gamma[i] * disc[i] / 100.0 + hol + u
        sale = rng.random(T) < 1 / (1 + np.exp(-logit))
        size = np.where(rng.random(T) < p_bulk[i],
                        3 + rng.poisson(bulk_mean[i], T),
                        1 + rng.poisson(small_mean[i], T))
        units[i] = np.where(sale, np.minimum(size, 15), 0)
    return write_csv("intermittent.csv", mondays, names, disc, to_next, check_units(units))


# --------------------------------------------------------------------------
# 5. big_and_small: 50 .. 80,000 units, AR(1) around a seasonal level
# --------------------------------------------------------------------------
def big_and_small():
    rng = np.random.default_rng(505)
    n_out, n_ser = 170, 10
    T = n_out + BURN_IN
    mondays, to_next, woy = calendar(dt.date(2019, 1, 7) - dt.timedelta(weeks=BURN_IN), T,
                                     ["easter", "midsummer", "back_to_school",
                                      "black_friday", "christmas"])
    names = [f"store-{i + 1:02d}" for i in range(n_ser)]
    level = np.exp(np.linspace(np.log(60), np.log(48000), n_ser)
                   + rng.normal(0, 0.1, n_ser))
    level = rng.permutation(level)
    big = level >= np.median(level)
    phi = rng.uniform(0.5, 0.85, n_ser)
    season_amp = rng.uniform(0.08, 0.25, n_ser)
    season_peak = rng.uniform(20, 30, n_ser)     # summer-peaking stores
    hol = np.zeros(T)
    for w, v in {2: 0.3, 1: 0.6, 0: 1.0}.items():
        hol[to_next == w] = v
    hol_share = rng.uniform(0.2, 0.5, n_ser)     # extra units = share * store level
    promo_units = rng.uniform(0.006, 0.015, n_ser) * level   # big: units per discount point
    promo_beta = rng.uniform(0.8, 2.0, n_ser)                # small: log-lift per fraction
    disc = np.zeros((n_ser, T), dtype=int)
    units = np.zeros((n_ser, T))
    for i in range(n_ser):
        disc[i], _ = campaigns(rng, T)
        mu = level[i] * yearly(woy, season_amp[i], season_peak[i])
        x = np.zeros(T)
        x[0] = mu[0]
        for t in range(1, T):
            x[t] = mu[t] + phi[i] * (x[t - 1] - mu[t - 1]) + rng.normal(0, 0.07 * level[i])
        value = x + hol_share[i] * level[i] * hol
        if big[i]:
            value = value + promo_units[i] * disc[i]
        else:
            value = value * np.exp(promo_beta[i] * disc[i] / 100.0)
        units[i] = rng.poisson(np.maximum(value, 0))
    return write_csv("big_and_small.csv", mondays, names, disc, to_next, check_units(units))


def main():
    for make in (elastic_mix, growth_regime, pantry_loading, intermittent, big_and_small):
        print("wrote", make())


if __name__ == "__main__":
    main()
