"""A published version loaded into ONNX Runtime, ready to forecast.

Shared by `demand predict` and the prediction service; imports no torch.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import orjson
from numpy.typing import ArrayLike, NDArray

from .calibrate import half_width
from .errors import BundleError, RegistryError
from .evaluate import interval_bounds
from .features import (
    CALENDAR,
    WINDOW_WEEKS,
    FeatureSpec,
    StoredTails,
    assemble,
    calendar_columns,
    history_columns,
    static_matrix,
)
from .normalize import MinMaxStats, dictionary_coded
from .registry import TAILS_FILE, Registry
from .schema import INPUT_TENSOR, NORMALIZED_TENSOR, OUTPUT_TENSOR, SERIES_TENSOR, UNKNOWN_SERIES

if TYPE_CHECKING:
    from types import ModuleType
    from typing import TypeAlias

    import onnxruntime as ort
    import pyarrow as pa

    # Each row's series name: str each (a list, or a NumPy array), or a pyarrow string array.
    SeriesNames: TypeAlias = Sequence[str] | np.ndarray | pa.Array
    # {series: (the week after its last stored week, [WINDOW_WEEKS] float64 sales before it, NaN unknown)}
    Tails: TypeAlias = Mapping[str, tuple[np.datetime64, np.ndarray]]

log = logging.getLogger("demand.bundle")
# Rows per ONNX Runtime call, times the widest layer: big enough that the
# per-call overhead vanishes, small enough that the intermediate tensors stay
# in the cache and the memory arena small (8192 rows of a 32-unit layer).
CHUNK_WORK = 8192 * 32


def make_session(
    path: str | os.PathLike[str], provider: str = "auto", threads: int = 0
) -> tuple[ort.InferenceSession, str]:
    """An ORT session on CUDA when asked for or available, else on the CPU.

    Returns (session, active provider). onnxruntime-gpu lists CUDA as available
    even on machines without a GPU and silently falls back, so the provider
    that counts is the first one the session really got.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    if provider == "cpu":
        wanted = ["CPUExecutionProvider"]
    elif provider in ("auto", "cuda"):
        wanted = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()]
    else:
        raise BundleError(f"provider must be auto, cpu or cuda, got {provider!r}")
    if provider == "auto" and "CUDAExecutionProvider" in wanted and not _cuda_driver_present():
        wanted = ["CPUExecutionProvider"]  # skip the noisy failed CUDA load on GPU-less hosts
    if "CUDAExecutionProvider" in wanted:
        preload_cuda_libraries(ort)
    # Full float32 on the GPU: TF32 matrix products would differ from the CPU
    # by about 1e-3, and these networks are far too small for it to pay.
    providers = [(p, {"use_tf32": "0"}) if p == "CUDAExecutionProvider" else p for p in wanted]
    session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
    active = session.get_providers()[0]
    if provider == "cuda" and active != "CUDAExecutionProvider":
        raise BundleError(f"CUDA was required but ONNX Runtime runs on {active}")
    return session, active


def preload_cuda_libraries(ort: ModuleType) -> None:
    """Load CUDA and cuDNN from NVIDIA's pip wheels (the GPU image's) before a CUDA session.

    Without it ONNX Runtime looks for them on the system library path only,
    finds none in a slim image, and silently runs on the CPU. Where they are
    installed system-wide instead, this finds nothing to do.
    """
    preload = getattr(ort, "preload_dlls", None)
    if preload is None:
        return
    try:
        preload(cuda=True, cudnn=True, msvc=False)
    except Exception as err:  # the session creation says what is really missing
        log.warning("onnxruntime.preload_dlls failed: %s", err)


def _cuda_driver_present() -> bool:
    return any(os.path.exists(p) for p in ("/dev/nvidia0", "/dev/nvidiactl", "/proc/driver/nvidia/version"))


class Bundle:
    def __init__(
        self,
        version: str,
        card: dict[str, Any],
        stats: MinMaxStats,
        session: ort.InferenceSession,
        provider: str,
        tails: Tails | None = None,
        statics: dict[str, dict[str, Any]] | None = None,
        concurrent: bool = False,
    ) -> None:
        self.version = version
        self.card = card
        self.stats = stats
        self.spec = FeatureSpec.from_json(card.get("features"))
        # Whether the model reads the chapter's three inputs and nothing else: requests take the fast paths.
        self.reads_three_inputs = self.spec.is_chapter
        # {series: (the week after its last training week, [WINDOW_WEEKS] sales before it)}
        self.tails = StoredTails.of(tails or {})
        self.statics = statics or {}  # {series: {static covariate: its value, as trained}}
        self.trained_series = self.tails.keys() | self.statics.keys()  # for a model that tells no series apart
        # Called with the features of every run (not the warm-up's): the service counts what it is served.
        self.observe: Callable[[np.ndarray], None] | None = None
        self.session = session
        self.provider = provider
        self.half_width = float(card["interval"]["half_width"])
        self.interval_scale = card["interval"].get("scale", "none")
        self.level = float(card["interval"]["level"])
        self.calibration = card.get("calibration")  # several weeks ahead; None for older versions
        self.chunk_rows = max(1024, CHUNK_WORK // max(card["model"]["hidden"], default=1))
        # A model that tells series apart takes each row's series index too;
        # older versions and networks that do not have no such input.
        self.knows_series = any(i.name == SERIES_TENSOR for i in session.get_inputs())
        # One inference at a time per session: the session already has its
        # share of the cores (intra-op threads), and request threads computing
        # side by side only thrash each other's caches. `concurrent`: the caller
        # runs them side by side on purpose, each on a core of its own (a
        # session of one intra-op thread computes on its caller's thread).
        self._compute: AbstractContextManager[Any] = nullcontext() if concurrent else threading.Lock()

    @classmethod
    def load(
        cls,
        registry: Registry,
        version: str | None = None,
        provider: str = "auto",
        threads: int = 0,
        concurrent: bool = False,
    ) -> Bundle:
        """Load `version` (default: the champion) and check that it forecasts; `concurrent`: see __init__."""
        version = version or registry.champion()
        if version is None:
            raise BundleError(f"no champion model in {registry.root}; train one with `demand train`")
        try:
            card = registry.card(version)
            stats = MinMaxStats.from_json(json.loads(registry.file(version, "normalization.json").read_text()))
            features = card.get("features") or {}
            tails, statics = (
                read_tails(registry.file(version, TAILS_FILE))
                if features.get("history") or features.get("static")
                else (None, None)
            )
            session, active = make_session(registry.file(version, "model.onnx"), provider, threads)
        except BundleError:
            raise
        except (RegistryError, OSError, KeyError, ValueError) as err:
            raise BundleError(f"cannot load model {version}: {err}") from None
        except Exception as err:  # ONNX Runtime's own load errors
            raise BundleError(f"cannot load model {version}: {err}") from None
        bundle = cls(version, card, stats, session, active, tails, statics, concurrent)
        bundle.check()
        return bundle

    def check(self) -> None:
        """Warm-up inference that also proves the outputs are usable."""
        rows = np.array([self.stats.raw_x_min, self.stats.raw_x_max], dtype=np.float32)
        try:
            units, normalized = self.run(rows)
        except Exception as err:
            raise BundleError(f"model {self.version} failed its warm-up inference: {err}") from None
        if units.shape != (2,) or normalized.shape != (2,):
            raise BundleError(f"model {self.version} returned shape {units.shape}, expected (2,)")
        if not np.all(np.isfinite(units)):
            raise BundleError(f"model {self.version} returned non-finite forecasts on its warm-up rows")

    def series_codes(self, names: SeriesNames | None) -> NDArray[np.int64] | None:
        """[n] int64 model indices of series `names` (str each, or None: unknown for every row)."""
        return self.stats.series_codes(names)

    def unknown_series(self, names: SeriesNames | None, codes: np.ndarray | None = None) -> NDArray[np.intp]:
        """Indices of the rows of `names` (str each, or a pyarrow string array) that name a series
        the model does not know; none for a model that tells no series apart, or for a blank name
        (no series). `codes`: series_codes(names), when they are at hand."""
        if names is None:
            return np.empty(0, dtype=np.intp)
        coded = dictionary_coded(names)
        if coded is not None:  # a file's column: each distinct name looked up once, each row by its index
            unknown_names = np.zeros(len(coded.dictionary), dtype=np.bool_)
            unknown_names[self.unknown_series(coded.dictionary)] = True
            return np.flatnonzero(unknown_names[coded.indices.to_numpy(zero_copy_only=False)]).astype(np.intp)
        if not self.knows_series:  # a model of history or static covariates knows the series it stored
            trained = self.trained_series
            if not trained:
                return np.empty(0, dtype=np.intp)
            if type(names).__module__.startswith("pyarrow"):  # a file's column, in C
                import pyarrow as pa
                import pyarrow.compute as pc

                known = pc.is_in(names, value_set=pa.array(sorted(trained), pa.string()))
                unknown_named = pc.and_(pc.invert(known), pc.not_equal(names, ""))
                return np.flatnonzero(unknown_named.to_numpy(zero_copy_only=False)).astype(np.intp)
            return np.array([i for i, name in enumerate(names) if name and str(name) not in trained], dtype=np.intp)
        unknown = np.flatnonzero((self.series_codes(names) if codes is None else codes) == UNKNOWN_SERIES)
        if not len(unknown):
            return unknown
        if type(names).__module__.startswith("pyarrow"):
            import pyarrow.compute as pc

            named = pc.not_equal(pc.take(names, unknown), "").to_numpy(zero_copy_only=False)
        else:
            named = np.array([names[i] for i in unknown.tolist()], dtype=object) != ""
        return unknown[named]

    def run(
        self, X: NDArray[np.float32], codes: NDArray[np.int64] | None = None, observed: bool = True
    ) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        """Raw ONNX outputs for float32 features [n, 3] -> (units [n], normalized [n]).

        `codes`: [n] int64 series indices (series_codes), for a model that
        knows series; None forecasts every row as a series it never saw.

        Large inputs go through in chunks: intermediate tensors stay in the
        cache and ONNX Runtime's memory arena stays small (a 100k-row batch
        runs faster this way, and a worker keeps its RSS). `observed`: False when the caller hands the
        features to `observe` itself (a plan: its weeks at once, not a step at a time).
        """
        if self.observe is not None and observed:
            self.observe(X)
        if self.knows_series and codes is None:
            codes = np.full(len(X), UNKNOWN_SERIES, dtype=np.int64)

        def feed(rows):
            return {INPUT_TENSOR: X[rows], SERIES_TENSOR: codes[rows]} if self.knows_series else {INPUT_TENSOR: X[rows]}

        if len(X) <= self.chunk_rows:
            with self._compute:
                units, normalized = self.session.run([OUTPUT_TENSOR, NORMALIZED_TENSOR], feed(slice(None)))
            return units.reshape(-1), normalized.reshape(-1)
        units = np.empty(len(X), dtype=np.float32)
        normalized = np.empty(len(X), dtype=np.float32)
        for start in range(0, len(X), self.chunk_rows):
            stop = start + self.chunk_rows
            with self._compute:  # per chunk, so small requests slip in between
                u, n = self.session.run([OUTPUT_TENSOR, NORMALIZED_TENSOR], feed(slice(start, stop)))
            units[start:stop], normalized[start:stop] = u.reshape(-1), n.reshape(-1)
        return units, normalized

    def forecast(
        self,
        X: ArrayLike,
        ranges: tuple[np.ndarray, np.ndarray] | None = None,
        series: SeriesNames | None = None,
    ) -> dict[str, Any]:
        """Forecasts with their interval, the rows with features outside the
        training range ("extrapolated_rows", and their "extrapolated_flags"),
        and the rows naming a series the model does not know ("unknown_series").
        `series`: each row's series name, or None."""
        X = np.ascontiguousarray(X, dtype=np.float32).reshape(-1, len(self.stats.names))
        codes = self.series_codes(series) if self.knows_series else None
        units, normalized = self.run(X, codes)
        low, high = interval_bounds(units, self.half_width, self.interval_scale)
        rows, flags = self.stats.outside_training_range(X, ranges)
        return {
            "units_sold": units,
            "units_sold_normalized": normalized,
            "low": low,
            "high": high,
            "extrapolated_rows": rows,
            "extrapolated_flags": flags,
            "unknown_series": self.unknown_series(series, codes),
        }

    def forecast_plan(
        self,
        start: ArrayLike,
        plan: ArrayLike,
        weeks: ArrayLike,
        levels: Iterable[float],
        series: SeriesNames | None = None,
        dates: ArrayLike | None = None,
        static: dict[str, ArrayLike] | None = None,
    ) -> dict[str, Any]:
        """Recursive forecasts of S series over up to H weeks each.

        `start` [S] each series' last week's sales, or [S, WINDOW_WEEKS] its
        weeks before the plan (oldest first, NaN unknown; plan_start) for a
        model that reads history; `plan` [S, H, len(spec.known)] the known
        covariates of each week; `weeks` [S] how many of the H each series
        has; `dates` [S, H] each week's date (NaT: unknown, the calendar is
        then filled) for a model that reads the calendar; `static` {name:
        [S] its number or category} per static covariate. Week h of a series reads its forecasts of the
        weeks before as its sales history, exactly as files are featured
        (pipeline.features). `series` [S]: the series' names. One ONNX
        Runtime call per step for all series still going. Returns a dict:
        "units_sold" [S, H] (NaN past a series' weeks), "intervals" {level:
        (low, high)} of [S, H] arrays (None without calibration), "outside"
        [S, H, k] features outside the training range, "filled" [S, H,
        len(spec.fillable)] features filled for lack of weeks, "unknown_series"
        (Bundle.unknown_series), and "interval_steps" [H]: the calibrated
        step each step's interval is from.
        """
        spec = self.spec
        plan = np.asarray(plan, dtype=np.float32)
        weeks = np.asarray(weeks)
        S, H = plan.shape[:2]
        start = np.asarray(start, dtype=np.float64)
        window = start if start.ndim == 2 else None
        last = window[:, -1].copy() if window is not None else start.copy()
        units = np.full((S, H), np.nan, dtype=np.float32)
        inputs = np.zeros((S, H, len(self.stats.names)), dtype=np.float32)  # what each week was forecast from
        filled = np.zeros((S, H, len(spec.fillable)), dtype=bool)
        codes = self.series_codes(series) if self.knows_series else None
        static_X, unseen = static_matrix(spec, static or {}, S) if spec.static else (None, np.zeros((S, 0), bool))
        if spec.history and window is None:
            window = np.full((S, WINDOW_WEEKS), np.nan)
            window[:, -1] = last
        weekly = None  # [S, WINDOW_WEEKS + H]: the window, then each week's forecast as the next week's history
        if spec.history:
            weekly = np.full((S, WINDOW_WEEKS + H), np.nan)
            weekly[:, :WINDOW_WEEKS] = cast(np.ndarray, window)
        if self.reads_three_inputs:  # the hot path of the chapter's model: no window, no calendar
            inputs[:, :, 1:] = plan
            inputs[:, 0, 0] = last
        if spec.calendar:  # every week's place in the year at once; an unknown week's is the year's centre
            days = (
                np.asarray(dates, dtype="datetime64[D]")
                if dates is not None
                else np.full((S, H), np.datetime64("NaT"), dtype="datetime64[D]")
            )
            dated = ~np.isnat(days)
            year = np.zeros((S, H, len(CALENDAR)))
            year[dated] = calendar_columns(days[dated])
        for h in range(H):
            going = np.flatnonzero(weeks > h)
            # Every series still going (most plans): views, not copies, of each array's rows.
            rows: slice | np.ndarray = slice(None) if len(going) == S else going
            if self.reads_three_inputs:
                if h:
                    inputs[rows, h, 0] = last[rows]
            else:
                history = calendar = None
                flags = []
                if spec.history:
                    # a model that reads history always has a window (made above when not given)
                    recent = cast(np.ndarray, weekly)[rows, h : WINDOW_WEEKS + h]
                    history, history_filled = history_columns(recent, last[rows])
                    flags.append(history_filled)
                if spec.calendar:
                    calendar = year[rows, h]
                    flags.append(np.repeat(~dated[rows, h][:, None], len(CALENDAR), axis=1))
                inputs[rows, h] = assemble(
                    spec, last[rows], plan[rows, h], history, calendar, None if static_X is None else static_X[rows]
                )
                flags.append(unseen[rows])
                filled[rows, h] = np.column_stack(flags)
            features, series_codes = np.ascontiguousarray(inputs[rows, h]), None if codes is None else codes[rows]
            forecast, _ = self.run(features, series_codes, observed=False)
            units[rows, h] = forecast
            last[rows] = np.maximum(forecast, 0.0)
            if weekly is not None:
                weekly[rows, WINDOW_WEEKS + h] = last[rows]
        planned = np.arange(H) < weeks[:, None]
        if self.observe is not None:
            self.observe(inputs[planned])  # every planned week's features, counted once
        outside = self.stats.outside_flags(inputs) & planned[:, :, None]
        return {
            "units_sold": units,
            "outside": outside,
            "filled": filled,
            "unknown_series": self.unknown_series(series, codes),
            **self.plan_intervals(units, levels),
        }

    def plan_start(
        self,
        ids: Sequence[str],
        prev_week_sales: ArrayLike | None = None,
        histories: Sequence[Sequence[float] | np.ndarray | None] | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Where each plan's series starts: ([S, WINDOW_WEEKS] its weeks before the plan, [S] the plan's
        first week when known (NaT otherwise), [S] bool: a series that has no last week to start from).

        A series' `histories` entry (recent weekly sales, oldest first) replaces
        the tail its version stored; without either, the window is empty. A
        `prev_week_sales` that is not NaN is last week's sales in any case.
        The first week is the one after the stored tail (none after a given history).
        """
        S = len(ids)
        window = np.full((S, WINDOW_WEEKS), np.nan)
        first = np.full(S, np.datetime64("NaT"), dtype="datetime64[D]")
        given = [i for i, history in enumerate(histories or ()) if history is not None and len(history)]
        if self.spec.history:  # the stored tails of the series without a history of their own, at once
            row = self.tails.rows_of(ids)
            row[given] = -1
            stored = np.flatnonzero(row >= 0)
            first[stored] = self.tails.next_weeks[row[stored]]
            window[stored] = self.tails.sales[row[stored]]
        for i in given:
            recent = np.asarray(cast(Sequence[Sequence[float]], histories)[i], dtype=np.float64)[-WINDOW_WEEKS:]
            window[i, WINDOW_WEEKS - len(recent) :] = recent
        if prev_week_sales is not None:
            prev = np.asarray(prev_week_sales, dtype=np.float64)
            window[:, -1] = np.where(np.isnan(prev), window[:, -1], prev)
        return window, first, np.isnan(window[:, -1])

    def plan_intervals(self, units: np.ndarray, levels: Iterable[float]) -> dict[str, Any]:
        """{"intervals": {level: (low, high)} or None, "interval_steps": [H] or None} for forecasts [S, H]."""
        if not self.calibration or not self.calibration.get("steps"):
            return {"intervals": None, "interval_steps": None}
        scale = self.calibration["scale"]
        intervals, steps = {}, None
        for level in levels:
            widths, steps = zip(*(half_width(self.calibration, h + 1, level) for h in range(units.shape[1])))
            low, high = interval_bounds(units, np.asarray(widths, dtype=np.float64), scale)
            intervals[level] = (low, high)
        # `levels` is never empty (its readers refuse that), so `steps` is set
        return {"intervals": intervals, "interval_steps": list(cast("tuple[int, ...]", steps))}

    def trained_until(self) -> dict[str, dt.date]:
        return last_training_weeks(self.tails)

    def interval_notes(self, horizon: int) -> list[str]:
        """What forecasts `horizon` weeks ahead must say about their intervals: none, or why they are missing
        or reused from the last calibrated step."""
        last = self.calibrated_steps()
        if not last:
            return [
                f"model {self.version} has no per-step interval calibration (its training data had no weeks to "
                "chain): no intervals; retrain it to get them"
            ]
        if horizon > last:
            return [
                f"weeks {last + 1} to {horizon} use the interval of week {last}, the last step calibrated on held-out weeks"
            ]
        return []

    def calibrated_steps(self) -> int:
        return len(self.calibration["steps"]) if self.calibration else 0

    def extrapolated_names(self, out: dict[str, Any]) -> dict[int, list[str]]:
        """{row index: [feature names outside the training range]} from forecast()."""
        return {
            int(i): [name for name, flag in zip(self.stats.names, flags) if flag]
            for i, flags in zip(out["extrapolated_rows"], out["extrapolated_flags"])
        }


def last_training_weeks(tails: Tails) -> dict[str, dt.date]:
    """Each stored series' last training week, from its tail (read_tails)."""
    return {name: (week - np.timedelta64(7, "D")).astype(dt.date) for name, (week, _) in tails.items()}


def read_tails(path: Path) -> tuple[Tails, dict[str, dict[str, Any]]]:
    """A published version's history.json (`path`) as ({series: (next week, [WINDOW_WEEKS] float64 sales, NaN unknown)},
    {series: {static covariate: its number or category}})."""
    doc = orjson.loads(path.read_bytes())
    return tails_from_document(doc), doc.get("static", {})


def tails_from_document(doc: dict[str, Any]) -> StoredTails:
    """pipeline.publish.tails_document's stored sales, as read_tails returns them."""
    names = list(doc["sales"])
    # numpy reads JSON's null (None) in a float array as NaN
    sales = np.array([doc["sales"][name] for name in names], dtype=np.float64).reshape(len(names), WINDOW_WEEKS)
    weeks = np.array([doc["next_week"][name] for name in names], dtype="datetime64[D]")
    return StoredTails(names, weeks, sales)
