"""Command line: `peftdoctor check | inspect | rules | explain`.

Exit status: 0 no findings (info findings alone count as none), 1 findings,
2 usage error or unreadable input. Errors are one line, never a traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from peftdoctor import __version__
from peftdoctor.config import CODE_PATTERN, Config, ConfigError, load_config, nearest_config
from peftdoctor.finding import Finding, Severity
from peftdoctor.reporters import FORMATS, render

EXIT_CLEAN, EXIT_FINDINGS, EXIT_ERROR = 0, 1, 2


class UsageFailure(click.ClickException):
    exit_code = EXIT_ERROR

    def show(self, file=None):
        click.echo(f"peftdoctor: error: {self.format_message()}", err=True)


def _split_codes(values) -> list[str]:
    codes: list[str] = []
    for value in values or ():
        codes.extend(part.strip().upper() for part in value.split(",") if part.strip())
    for code in codes:
        if not CODE_PATTERN.match(code):
            raise UsageFailure(f"'{code}' is not a rule code or prefix (e.g. PD101, PD1, ALL)")
    return codes


def resolve_config(paths, config_file: str | None, select, ignore, extend_select) -> Config:
    """Config from --config or the nearest pyproject.toml, then CLI flags on top."""
    try:
        if config_file:
            config = load_config(Path(config_file))
        else:
            start = Path(paths[0]) if paths else Path.cwd()
            config = nearest_config(start if start.exists() else Path.cwd())
    except ConfigError as exc:
        raise UsageFailure(str(exc)) from None
    if select:
        config.select = _split_codes(select)
    if ignore:
        config.ignore = [*config.ignore, *_split_codes(ignore)]
    if extend_select:
        config.extend_select = [*config.extend_select, *_split_codes(extend_select)]
    return config


def exit_status(findings: list[Finding]) -> int:
    return EXIT_FINDINGS if any(f.severity != Severity.INFO for f in findings) else EXIT_CLEAN


def emit(fmt: str, findings: list[Finding], output: str | None, protected=(), **info) -> None:
    """Write the report to --output (atomically, see peftdoctor.safe_write) or stdout.

    `protected`: the files checked; an --output naming one of them is refused.
    """
    if output is None:
        color = None if fmt == "text" else False
        render(fmt, findings, sys.stdout, color=color, **info)
        return
    check_output(output, protected)
    import io

    from peftdoctor.safe_write import Refused, reason, replace_file

    def write(stream) -> None:
        text = io.TextIOWrapper(stream, encoding="utf-8", newline="\n", write_through=True)
        render(fmt, findings, text, color=False, **info)
        text.flush()
        text.detach()

    try:
        replace_file(output, write)
    except (Refused, OSError) as exc:
        raise UsageFailure(f"{output}: cannot write report: {reason(exc)}") from None


def check_output(output: str | None, protected) -> None:
    """Refuse, before anything runs, an --output that is one of the checked files or cannot be replaced."""
    if output is None:
        return
    from peftdoctor.safe_write import Refused, check_target, reason, same_file

    for path in protected:
        if same_file(output, path):
            raise UsageFailure(f"{output}: cannot write report: it is one of the checked files ({path})")
    try:
        check_target(output)
    except (Refused, OSError) as exc:
        raise UsageFailure(f"{output}: cannot write report: {reason(exc)}") from None


def checked_files(paths, config) -> list[str]:
    """The paths given and the Python files that `check` reads under them (for check_output)."""
    from peftdoctor.engine import PathError, iter_python_files

    files = [str(raw) for raw in paths]
    try:
        files.extend(str(path) for path, _ in iter_python_files(paths, config))
    except PathError:  # reported by the check itself
        pass
    return files


def folders_of(paths) -> tuple[str, ...]:
    """Map file paths to their folders, first-seen order, each folder once (for pre-commit)."""
    folders: dict[str, None] = {}
    for raw in paths:
        path = Path(raw)
        folder = path if path.is_dir() else path.parent
        folders.setdefault(str(folder), None)
    return tuple(folders)


select_option = click.option("--select", multiple=True, help="Only these codes or prefixes (comma separated).")
ignore_option = click.option("--ignore", multiple=True, help="Skip these codes or prefixes.")
extend_option = click.option("--extend-select", multiple=True, help="Add codes to the selection.")
format_option = click.option("--format", "fmt", type=click.Choice(FORMATS), default="text", show_default=True)
output_option = click.option("--output", "-o", type=click.Path(dir_okay=False), help="Write the report to FILE.")
config_option = click.option("--config", "config_file", type=click.Path(dir_okay=False),
                             help="A pyproject.toml (or peftdoctor.toml) to read settings from.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="peftdoctor")
def cli() -> None:
    """Find silent PEFT fine-tuning mistakes in scripts and checkpoints."""


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@select_option
@ignore_option
@extend_option
@config_option
@format_option
@output_option
@click.option("--statistics", is_flag=True, help="Print counts per rule.")
@click.option("--report-unused-noqa", is_flag=True, help="Report suppression comments that suppress nothing.")
@click.option("--fix", is_flag=True, help="Apply the fixes that are certainly safe.")
@click.option("--diff", "show_diff", is_flag=True, help="Show the fixes as a diff; write nothing.")
@click.option("--no-cache", is_flag=True, envvar="PEFTDOCTOR_NO_CACHE",
              help="Read every file again; neither read nor write the cache.")
@click.option("--cache-dir", type=click.Path(file_okay=False), envvar="PEFTDOCTOR_CACHE_DIR",
              help="Where to keep the cache (default: .peftdoctor_cache at the project root).")
@click.option("--jobs", "-j", type=click.IntRange(min=1), default=None,
              help="Processes to check with (default: the number of cores).")
def check(paths, select, ignore, extend_select, config_file, fmt, output, statistics,
          report_unused_noqa, fix, show_diff, no_cache, cache_dir, jobs) -> None:
    """Lint training scripts (files or folders) for PEFT mistakes."""
    from peftdoctor.engine import PathError, check_paths
    from peftdoctor.project_run import default_jobs

    config = resolve_config(paths, config_file, select, ignore, extend_select)
    protected = checked_files(paths, config) if output is not None else ()
    check_output(output, protected)
    if fix or show_diff:
        from peftdoctor.fix import apply_fixes

        try:
            changed = apply_fixes(paths, config, write=fix and not show_diff, stream=sys.stdout)
        except PathError as exc:
            raise UsageFailure(str(exc)) from None
        if show_diff:
            sys.exit(EXIT_FINDINGS if changed else EXIT_CLEAN)
    cache = None if no_cache else _result_cache(paths, cache_dir)
    try:
        result = check_paths(paths, config, report_unused_noqa=report_unused_noqa, cache=cache,
                             jobs=jobs or default_jobs())
    except PathError as exc:
        raise UsageFailure(str(exc)) from None
    findings = sorted([*result.findings, *result.unused_suppressions], key=Finding.sort_key)
    emit(fmt, findings, output, protected, files_checked=result.files_checked, statistics=statistics, tool_kind="check")
    sys.exit(exit_status(findings))


def _result_cache(paths, cache_dir: str | None):
    from peftdoctor.cache import ResultCache, default_folder
    from peftdoctor.engine import project_root_of

    if cache_dir:
        return ResultCache(Path(cache_dir))
    existing = [path for path in paths if Path(path).exists()]
    return ResultCache(default_folder(project_root_of(existing))) if existing else None


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--base", help="Base model folder (or a name in the local HF cache) for the deep checks.")
@click.option("--deep", is_flag=True, help="Run the deep checks on the adapter's own base model, if local.")
@click.option("--device", default="auto", show_default=True, help="auto|cpu|cuda|cuda:N|mps")
@click.option("--dtype", default="auto", show_default=True,
              type=click.Choice(["auto", "float32", "float16", "bfloat16"]))
@click.option("--device-map", default=None, help="Pass 'auto' to spread a large base over devices.")
@click.option("--no-merge-check", is_flag=True, help="Skip the forward passes (PD702/PD703).")
@click.option("--from-files", is_flag=True,
              help="PATHS are files inside adapters (as pre-commit passes them): check their folders, once each.")
@select_option
@ignore_option
@config_option
@format_option
@output_option
def inspect(paths, base, deep, device, dtype, device_map, no_merge_check, from_files, select, ignore,
            config_file, fmt, output) -> None:
    """Check saved adapters (folders, multi-adapter saves or checkpoint-* runs).

    Two PATHs that are checkpoints of one adapter are also compared: PD709 names the tensors that did not change.
    """
    from peftdoctor.inspect.run import InputError, inspect_paths

    if from_files:
        paths = folders_of(paths)
    config = resolve_config(paths, config_file, select, ignore, ())
    check_output(output, paths)
    try:
        result = inspect_paths(
            paths,
            config=config,
            base=base,
            deep=deep or base is not None,
            device=device,
            dtype=dtype,
            device_map=device_map,
            merge_check=not no_merge_check,
            show_summary=fmt == "text" and output is None,
        )
    except InputError as exc:
        raise UsageFailure(str(exc)) from None
    emit(fmt, result.findings, output, paths, files_checked=result.adapters_checked, noun="adapter",
         tool_kind="inspect")
    sys.exit(exit_status(result.findings))


@cli.command("rules")
def list_rules() -> None:
    """List every rule: code, name and one line."""
    from peftdoctor.registry import all_rules

    for rule in all_rules():
        click.echo(f"{rule.code}  {rule.name:<34} {rule.summary}")


@cli.command()
@click.argument("code")
def explain(code) -> None:
    """Print the documentation of one rule."""
    from peftdoctor.registry import doc_path, get_rule

    rule = get_rule(code)
    if rule is None:
        raise UsageFailure(f"unknown rule code '{code}' (see `peftdoctor rules`)")
    doc = doc_path(rule.code)
    if doc is None:
        click.echo(f"{rule.code} {rule.name}: {rule.summary}")
        return
    click.echo(doc.read_text(encoding="utf-8"))


def main() -> None:
    try:
        cli(standalone_mode=True)
    except KeyboardInterrupt:  # pragma: no cover
        click.echo("peftdoctor: interrupted", err=True)
        sys.exit(EXIT_ERROR)


if __name__ == "__main__":  # pragma: no cover
    main()
