import numpy as np
import pytest

from pipeline.data import load_file
from pipeline.generate import DemandLaw, GeneratorConfig, generate, weeks_to_next_holiday, write_csv

from .conftest import DEFAULT_CSV

TABLE_8_1 = [  # prev_week_sales, discount %, weeks to holiday, units sold
    (76_440, 63, 2, 94_182),
    (41_512, 50, 3, 51_531),
    (77_395, 77, 9, 95_938),
    (21_532, 70, 4, 28_559),
]


@pytest.mark.parametrize("prev, discount, weeks, units", TABLE_8_1)
def test_expected_value_agrees_with_table_8_1_within_10_percent(prev, discount, weeks, units):
    expected = DemandLaw().expected_units(prev, discount, weeks)
    assert abs(expected / units - 1) <= 0.10


def test_noise_has_mean_one_so_the_law_is_the_expected_value():
    # Many series from one state: the average outcome matches the law.
    config = GeneratorConfig(seed=1, series=400, weeks=30)
    rows = generate(config)
    X = np.array([[r["prev_week_sales"], r["discount_fraction"], r["weeks_to_next_holidays"]] for r in rows], float)
    y = np.array([r["units_sold"] for r in rows], float)
    ratio = y / config.law.expected_units(*X.T)
    assert ratio.mean() == pytest.approx(1.0, abs=0.005)


def test_generation_is_deterministic_for_a_seed():
    assert generate(GeneratorConfig(seed=5, series=2, weeks=20)) == generate(
        GeneratorConfig(seed=5, series=2, weeks=20)
    )
    assert generate(GeneratorConfig(seed=5, series=2, weeks=20)) != generate(
        GeneratorConfig(seed=6, series=2, weeks=20)
    )


def test_embedded_data_is_what_the_generator_writes(tmp_path):
    path = tmp_path / "again.csv"
    write_csv(generate(GeneratorConfig()), path)
    assert path.read_bytes() == DEFAULT_CSV.read_bytes()


def test_embedded_data_shape_and_domain():
    data = load_file(DEFAULT_CSV)  # validates every row
    assert len(set(data.series.tolist())) >= 3
    weeks = np.unique(data.week)
    assert (weeks[-1] - weeks[0]).astype(int) >= 2 * 364
    assert np.all(np.diff(weeks).astype(int) == 7)
    assert (data.X[:, 1] > 0).mean() > 0.15  # discount campaigns happen
    assert data.X[:, 2].min() == 0  # holiday weeks are in the data


def test_weeks_to_next_holiday():
    import datetime as dt

    assert weeks_to_next_holiday(dt.date(2024, 12, 16)) == 0  # ISO week 51
    assert weeks_to_next_holiday(dt.date(2024, 12, 2)) == 2
