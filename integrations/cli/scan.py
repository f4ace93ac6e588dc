"""The ``scan`` click command (mounted by ``leaseline.cli``; also ``python -m leaseline.scan``).

Exit codes: 0 nothing new found, 1 findings, 2 usage or config error (others from the store
errors met while checking managed values: 3 not found, 4 denied, 5 store unavailable).
"""

from __future__ import annotations

import os
import re
import sys

import click

from .._config import Config, load_config
from .._exceptions import LeaselineError
from ..scan import ScanResult
from ..scan import scan as run_scan
from ..scan._baseline import write_baseline
from ..scan._report import render

__all__ = ["main", "scan"]


@click.command("scan")
@click.argument("paths", nargs=-1, type=click.Path(exists=True))
@click.option(
    "--image",
    "images",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="Scan a `docker save` or OCI-layout image tarball: config (Env, ARG/ENV history) and "
    "every layer's files (repeatable; PATHs are then scanned only when given).",
)
@click.option(
    "--mlflow",
    "mlflow_uri",
    metavar="TRACKING_URI",
    help="Scan an MLflow tracking server: every run's params, tags and small text artefacts "
    "(MLmodel, YAML/JSON/TXT...); auth as MLflow's own (MLFLOW_TRACKING_USERNAME...). PATHs are "
    "then scanned only when given.",
)
@click.option(
    "--experiment",
    "experiments",
    multiple=True,
    metavar="NAME",
    help="With --mlflow: only this experiment (repeatable; default: all).",
)
@click.option("--staged", is_flag=True, help="Scan the staged content of the git index.")
@click.option(
    "--baseline", type=click.Path(dir_okay=False), help="Accept the findings listed in FILE."
)
@click.option(
    "--update-baseline", is_flag=True, help="Write the current findings to --baseline and exit 0."
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json", "sarif"]),
    default="table",
    show_default=True,
)
@click.option("--exclude", multiple=True, metavar="GLOB", help="Skip matching paths (repeatable).")
@click.option(
    "--confidence",
    type=click.Choice(["high", "medium", "low"]),
    default=None,
    help="Lowest confidence to report (default: [scan] confidence, else medium: what is "
    "actionable; low adds keyword findings that read as stand-ins, tests and docs).",
)
@click.option("--all", "show_all", is_flag=True, help="Report every finding (--confidence low).")
@click.option(
    "--no-managed",
    is_flag=True,
    help="Do not read managed references to tell which findings are current values.",
)
@click.option(
    "--fix",
    is_flag=True,
    help="Rewrite credentials and managed values in notebooks' saved outputs to *** in place "
    "(the notebook stays valid; cell sources are only reported). Exits 1 when a file changed.",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="leaseline.toml to use (default: LEASELINE_CONFIG, ./leaseline.toml).",
)
def scan(
    paths: tuple[str, ...],
    images: tuple[str, ...],
    mlflow_uri: str | None,
    experiments: tuple[str, ...],
    staged: bool,
    baseline: str | None,
    update_baseline: bool,
    fmt: str,
    exclude: tuple[str, ...],
    confidence: str | None,
    show_all: bool,
    no_managed: bool,
    fix: bool,
    config_path: str | None,
) -> None:
    """Find committed credentials in PATHs (default: .), notebooks included.

    Every finding names the reference to use instead; with [audit] hmac_key configured, it also
    says when the value is the current value of a managed reference (rotate it now).
    """
    if update_baseline and not baseline:
        raise click.UsageError("--update-baseline needs --baseline FILE")
    if experiments and not mlflow_uri:
        raise click.UsageError("--experiment NAME needs --mlflow TRACKING_URI")
    if fix and (staged or images or update_baseline):
        raise click.UsageError(
            "--fix rewrites files on disk: give it PATHs (pre-commit passes the staged file "
            "names), not --staged, --image or --update-baseline"
        )
    try:
        config = load_config(config_path)
        if not baseline and not update_baseline:
            configured = config.section("scan").get("baseline")
            baseline = str(configured) if configured else None
        result = None
        if paths or staged or not (images or mlflow_uri):
            result = run_scan(
                list(paths),
                staged=staged,
                baseline=None if update_baseline else baseline,
                config=config,
                managed=not no_managed and not update_baseline,
                excludes=exclude,
                confidence="low" if show_all else confidence,
            )
        if images:
            from ..scan._image import scan_images

            found, skipped = scan_images(
                list(images),
                baseline=None if update_baseline else baseline,
                config=config,
                managed=not no_managed and not update_baseline,
                confidence="low" if show_all else confidence,
            )
            for image, layer, why in skipped:
                click.echo(f"leaseline scan: {image}: {layer} skipped: {why}", err=True)
            if result is not None:
                found.findings = result.findings + found.findings
                found.all_findings = result.all_findings + found.all_findings
                found.files_scanned += result.files_scanned
                found.managed_errors += result.managed_errors
                found.hidden += result.hidden
            result = found
        if mlflow_uri:
            result = _merge(
                result,
                _scan_mlflow(
                    mlflow_uri,
                    experiments,
                    config,
                    baseline,
                    managed=not no_managed and not update_baseline,
                    confidence="low" if show_all else confidence,
                ),
            )
        assert result is not None  # paths (default .), the index, images or MLflow were scanned
    except LeaselineError as exc:
        click.echo(f"leaseline scan: {exc}", err=True)
        sys.exit(exc.exit_code)
    if update_baseline and baseline:
        count = write_baseline(baseline, result.all_findings)
        click.echo(f"wrote {count} accepted finding(s) to {baseline}", err=True)
        sys.exit(0)
    fixed: dict[str, int] = {}
    if fix:
        fixed = _fix(list(paths), result, config, exclude, managed=not no_managed)
    if result.engine == "python" and os.environ.get("LEASELINE_SCAN_ENGINE") != "python":
        click.echo(
            "leaseline scan: Kingfisher's engine is not installed (pip install "
            "'leaseline[scan]'): leaseline's own rules only",
            err=True,
        )
    for ref, error in result.managed_errors:
        click.echo(f"leaseline scan: could not read managed reference {ref}: {error}", err=True)
    click.echo(render(fmt, result.findings, result.files_scanned, result.hidden))
    for path, count in fixed.items():
        click.echo(f"leaseline scan: fixed {path}: {count} output field(s) now show ***", err=True)
    sys.exit(1 if fixed else result.exit_code)


def _scan_mlflow(
    uri: str,
    experiments: tuple[str, ...],
    config: Config,
    baseline: str | None,
    managed: bool,
    confidence: str | None,
) -> ScanResult:
    from ..scan._mlflow import scan_mlflow

    try:
        return scan_mlflow(
            uri,
            experiments,
            config=config,
            baseline=baseline,
            managed=managed,
            confidence=confidence,
        )
    except LeaselineError:
        raise
    except Exception as exc:  # MlflowException, requests' errors: the server's answer
        click.echo(
            f"leaseline scan --mlflow: could not read the tracking server: {type(exc).__name__}: "
            f"{_first_line(exc)}",
            err=True,
        )
        sys.exit(5)


def _first_line(exc: BaseException) -> str:
    """The error's first line, masked, without the password of a URL (``//user:pw@host``)."""
    from ..masking import masker

    text = str(exc).strip()
    line = text.splitlines()[0] if text else ""
    return masker().mask(re.sub(r"//[^/@\s]+@", "//***@", line))


def _merge(first: ScanResult | None, second: ScanResult) -> ScanResult:
    if first is None:
        return second
    second.findings = first.findings + second.findings
    second.all_findings = first.all_findings + second.all_findings
    second.files_scanned += first.files_scanned
    second.managed_errors += first.managed_errors
    second.hidden += first.hidden
    return second


def _fix(
    paths: list[str], result: ScanResult, config: Config, exclude: tuple[str, ...], managed: bool
) -> dict[str, int]:
    from ..scan._fix import fix, managed_plaintexts

    values: list[str] = []
    if managed:
        values, errors = managed_plaintexts(config)
        result.managed_errors += [e for e in errors if e not in result.managed_errors]
    try:
        fixed = fix(paths, result.findings, excludes=exclude, managed=values)
    except LeaselineError as exc:
        click.echo(f"leaseline scan --fix: {exc}", err=True)
        sys.exit(exc.exit_code)
    return {
        os.path.relpath(p) if not os.path.relpath(p).startswith("..") else p: n
        for p, n in fixed.items()
    }


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m leaseline.scan``."""
    scan.main(args=argv, prog_name="leaseline scan")
