"""``natkit lab matrix``: run DESIGN.md's traversal matrix and print expected
against observed (:mod:`natkit.lab.matrix`); optionally write the HTML report
with ladder diagrams and one pcap per scenario (:mod:`natkit.lab.report`).
Exit status 1 when any scenario differs from its expectation, 2 on bad usage."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from natkit.lab.matrix import ScenarioResult, all_scenarios, run_matrix, select

console = Console()
err_console = Console(stderr=True)


def matrix_command(
    mode: Annotated[
        str,
        typer.Option(
            "--mode",
            help="sim: every scenario on the simulated internet under a virtual clock; "
            "netns: the ECC 4x4 NAT grid through natkit's TUN NAT with real packets (root).",
        ),
    ] = "sim",
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object per scenario, one per line.")
    ] = False,
    report: Annotated[
        Path | None,
        typer.Option("--report", help="Write DIR/index.html and DIR/<scenario>.pcap."),
    ] = None,
    only: Annotated[
        str | None,
        typer.Option(
            "--only",
            help="Scenarios whose name or group matches this shell pattern "
            "(a plain word matches as a substring), e.g. 'ice/*' or signalling.",
        ),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of every random choice.")] = 0,
) -> None:
    """Run the traversal matrix: every claim of the founding documents as a
    scenario, expected against observed."""
    if mode not in ("sim", "netns"):
        raise typer.BadParameter("sim or netns", param_hint="--mode")
    extra: dict[str, dict[str, object]] = {}
    if mode == "sim":
        chosen = select(all_scenarios(), only)
        if not chosen:
            err_console.print(f"[red]error:[/red] no scenario matches {only!r}")
            raise typer.Exit(2)
        results = _run_with_progress(
            len(chosen), as_json, lambda cb: run_matrix(chosen, seed=seed, on_result=cb)
        )
    else:
        import secrets

        from natkit.lab.ice_netns import CallOutcome
        from natkit.lab.matrix_netns import chosen_pairs, run_netns_grid

        run_id = secrets.token_hex(3)
        calls: dict[str, CallOutcome] = {}
        total = len(chosen_pairs(only))
        from natkit.errors import NatkitError
        from natkit.net.netns import LabInterrupted

        try:
            results = _run_with_progress(
                total,
                as_json,
                lambda cb: run_netns_grid(
                    seed=seed, only=only, on_result=cb, run_id=run_id, calls=calls
                ),
            )
        except (KeyboardInterrupt, LabInterrupted) as exc:
            err_console.print(f"interrupted ({exc or 'SIGINT'}); the lab was torn down")
            raise typer.Exit(130) from None
        except NatkitError as exc:  # no root, no TUN device, a lab that did not build
            err_console.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(1) from exc
        if not results:
            err_console.print(f"[red]error:[/red] no scenario matches {only!r}")
            raise typer.Exit(2)
        # The lab's run id (its namespaces are natkit-<id>-*) and each call's details.
        for result in results:
            extra[result.scenario] = {"lab": run_id}
        for name, outcome in calls.items():
            extra[name]["call"] = outcome.to_json()
    if as_json:
        for result in results:
            row = result.to_json()
            row.update(extra.get(result.scenario, {}))
            sys.stdout.write(json.dumps(row) + "\n")
    else:
        print_table(results, mode)
    if report is not None:
        from natkit.lab.report import write_report

        index = write_report(results, report, mode=mode)
        (err_console if as_json else console).print(f"report: {index}")
    if not all(r.ok for r in results):
        raise typer.Exit(1)


def _run_with_progress(
    total: int,
    as_json: bool,
    run: Callable[[Callable[[ScenarioResult], None]], list[ScenarioResult]],
) -> list[ScenarioResult]:
    """Run with a progress bar on stderr (none with ``--json``)."""
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
        disable=as_json,
    )
    with progress:
        task = progress.add_task("matrix", total=total)

        def advance(result: ScenarioResult) -> None:
            progress.update(task, advance=1, description=result.scenario)

        return run(advance)


def print_table(results: list[ScenarioResult], mode: str) -> None:
    passed = sum(r.ok for r in results)
    table = Table(title=f"traversal matrix ({mode}): {passed}/{len(results)} as expected")
    table.add_column("scenario", no_wrap=True)
    table.add_column("expected")
    table.add_column("observed")
    table.add_column("")
    for r in results:
        mark = "[green]ok[/green]" if r.ok else "[red]DIFFERS[/red]"
        table.add_row(r.scenario, r.expected, r.observed, mark)
    console.print(table)
