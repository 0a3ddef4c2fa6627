"""`demand models`: the published versions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from ..documents import shown
from .base import FiniteRange, emit_json, friendly_errors, json_option, main, model_dir_option
from .training import format_metrics


@main.group()
def models() -> None:
    """Inspect and manage published versions."""


@models.command("list")
@model_dir_option
@json_option
@friendly_errors
def models_list(model_dir: Path, as_json: bool) -> None:
    """Every version, newest last, with its holdout WAPE."""
    from ..registry import Registry

    registry = Registry(model_dir)
    champion = registry.champion()
    rows: list[dict[str, Any]] = []
    for version in registry.versions():
        card = registry.card(version)
        rows.append(
            {
                "version": version,
                "champion": version == champion,
                "created_at": card["created_at"],
                "architecture": card["model"]["architecture"],
                "activation": card["model"]["activation"],
                "holdout_wape": card["metrics"]["holdout"]["model"]["wape"],
            }
        )
    if as_json:
        emit_json({"champion": champion, "versions": rows})
        return
    if not rows:
        click.echo(f"no versions in {model_dir}")
        return
    click.echo(f"  {'version':<9}{'created (UTC)':<27}{'network':<20}{'WAPE %':>8}")
    for r in rows:
        mark = "*" if r["champion"] else " "
        click.echo(
            f"{mark} {r['version']:<9}{r['created_at']:<27}{r['architecture'] + ' ' + r['activation']:<20}{shown(r['holdout_wape'], '>8.2f')}"
        )
    click.echo("* champion")


@models.command("promote")
@click.argument("version")
@click.option("--wait", type=FiniteRange(0, infinity=True), default=0, show_default=True)
@model_dir_option
@friendly_errors
def models_promote(version: str, wait: float, model_dir: Path) -> None:
    """Make VERSION the champion."""
    from ..registry import Registry

    registry = Registry(model_dir)
    with registry.writer(wait) as writer:
        previous = writer.promote(version, "manual promotion", "demand models promote")
    click.echo(f"champion: {version} (was {previous})")


@models.command("rollback")
@click.option("--wait", type=FiniteRange(0, infinity=True), default=0, show_default=True)
@model_dir_option
@friendly_errors
def models_rollback(wait: float, model_dir: Path) -> None:
    """Make the previous champion (per history.jsonl) the champion again."""
    from ..registry import Registry

    registry = Registry(model_dir)
    with registry.writer(wait) as writer:
        current, target = writer.rollback("demand models rollback")
    click.echo(f"champion: {target} (rolled back from {current})")


@models.command("prune")
@click.option("--keep", type=click.IntRange(1), required=True, help="How many of the newest versions to keep.")
@click.option("--wait", type=FiniteRange(0, infinity=True), default=0, show_default=True)
@model_dir_option
@friendly_errors
def models_prune(keep: int, wait: float, model_dir: Path) -> None:
    """Delete old versions; never the champion or the rollback target."""
    from ..registry import Registry

    registry = Registry(model_dir)
    with registry.writer(wait) as writer:
        removed = writer.prune(keep, "demand models prune")
    click.echo(f"removed {', '.join(removed) if removed else 'nothing'}; kept {', '.join(registry.versions())}")


@models.command("history")
@model_dir_option
@json_option
@friendly_errors
def models_history(model_dir: Path, as_json: bool) -> None:
    """Promotions, rejections, rollbacks and prunes, oldest first."""
    from ..registry import Registry

    events = Registry(model_dir).history()
    if as_json:
        emit_json(events)
        return
    for e in events:
        click.echo(
            f"{e.get('at', '?'):<22} {e.get('event', '?'):<9} {e.get('version') or '-':<6} {e.get('reason', '')}"
        )


@models.command("show")
@click.argument("version")
@model_dir_option
@json_option
@friendly_errors
def models_show(version: str, model_dir: Path, as_json: bool) -> None:
    """One version's card: data, parameters, metrics, interval, software."""
    from ..registry import Registry

    registry = Registry(model_dir)
    card = registry.card(version)
    if as_json:
        emit_json(card)
        return
    click.echo(format_metrics(version, card))
    click.echo(f"  champion: {'yes' if registry.champion() == version else 'no'}")
    click.echo(
        f"  created {card['created_at']} by {card['created_by']}, git {(card.get('git') or {}).get('sha', 'unknown')}"
    )
    click.echo(
        f"  network {card['model']['architecture']} {card['model']['activation']}; params {json.dumps(card['params'])}"
    )
    click.echo(
        f"  trained on {card['training']['device']} in {card['training']['seconds']}s, {card['training']['stopped_because']}"
    )
    if "selection" in card:  # versions from before selection and refit have neither
        click.echo(f"  preset {card['selection']['preset']}: {card['selection']['chosen']}")
        trained_on = card["trained_on"]
        click.echo(
            f"  published model trained on {trained_on['rows']} rows, weeks {trained_on['weeks']}: {trained_on['what']}"
        )
    data_info = card["data"]
    click.echo(
        f"  data {data_info['path']} sha256 {data_info['sha256'][:12]} rows {data_info['rows']} weeks {data_info['date_range']}"
    )
    click.echo(
        f"  ONNX opset {card['export']['opset']}, parity error {card['export']['parity_max_relative_error']:.2e}"
    )
    click.echo(f"  files in {registry.path(version)}")
