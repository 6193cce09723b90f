"""Command line: `peftdoctor check | inspect | rules | explain | demo | server`.

Exit status: 0 no findings (info findings alone count as none), 1 findings,
2 usage error or unreadable input. Errors are one line, never a traceback.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from peftdoctor import __version__
from peftdoctor.config import CODE_PATTERN, ConfigError, NearestConfigs, Overrides, load_config
from peftdoctor.finding import Finding, Severity
from peftdoctor.reporters import FORMATS, render

EXIT_CLEAN, EXIT_FINDINGS, EXIT_ERROR = 0, 1, 2


class UsageFailure(click.ClickException):
    exit_code = EXIT_ERROR

    def show(self, file=None):
        click.echo(f"peftdoctor: error: {self.format_message()}", err=True)


def _split_codes(values) -> list[str]:
    """Codes from --select/--ignore/--extend-select; a usage error for one that names no rule."""
    codes: list[str] = []
    for value in values or ():
        codes.extend(part.strip().upper() for part in value.split(",") if part.strip())
    known = None
    for code in codes:
        if not CODE_PATTERN.match(code):
            raise UsageFailure(f"'{code}' is not a rule code or prefix (e.g. PD101, PD1, ALL)")
        if code != "ALL":
            if known is None:
                from peftdoctor.registry import all_rules

                known = [rule.code for rule in all_rules()]
            if not any(rule_code.startswith(code) for rule_code in known):
                raise UsageFailure(f"'{code}' matches no rule (see `peftdoctor rules`)")
    return codes


def overrides_of(select, ignore, extend_select, respect_gitignore: bool | None = None) -> Overrides:
    return Overrides(select=_split_codes(select) if select else None, ignore=tuple(_split_codes(ignore)),
                     extend_select=tuple(_split_codes(extend_select)), respect_gitignore=respect_gitignore)


def check_configs(config_file: str | None, overrides: Overrides):
    """--config for every file (or adapter), or each one's nearest config file (see NearestConfigs); the
    command line's overrides on top."""
    if not config_file:
        return NearestConfigs(overrides)
    try:
        return overrides.apply(load_config(Path(config_file)))
    except ConfigError as exc:
        raise UsageFailure(str(exc)) from None


def color_choice(flag: str) -> bool | None:
    """--color: always/never win; auto honours NO_COLOR, then FORCE_COLOR, else asks the terminal (None)."""
    if flag != "auto":
        return flag == "always"
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR"):
        return True
    return None


def exit_status(findings: list[Finding]) -> int:
    return EXIT_FINDINGS if any(f.severity != Severity.INFO for f in findings) else EXIT_CLEAN


def emit(fmt: str, findings: list[Finding], output: str | None, protected=(), color: bool | None = None,
         **info) -> None:
    """Write the report to --output (atomically, see peftdoctor.safe_write) or stdout.

    `protected`: the files checked; an --output naming one of them is refused. `color`: see color_choice.
    """
    if output is None:
        render(fmt, findings, sys.stdout, color=color if fmt == "text" else False, **info)
        return
    check_output(output, protected)
    import io

    from peftdoctor.safe_write import Refused, reason, replace_file

    def write(stream) -> None:
        text = io.TextIOWrapper(stream, encoding="utf-8", errors="backslashreplace", newline="\n",
                                write_through=True)
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
output_option = click.option("--output", "-o", type=click.Path(), help="Write the report to FILE.")
config_option = click.option("--config", "config_file", type=click.Path(dir_okay=False),
                             help="A pyproject.toml (or peftdoctor.toml) to read settings from.")
quiet_option = click.option("--quiet", "-q", is_flag=True, help="Print the findings and nothing else.")
statistics_option = click.option("--statistics", is_flag=True,
                                 help="Print counts per rule (with names and fixable marks) instead of the findings.")
color_option = click.option("--color", "color_flag", type=click.Choice(["auto", "always", "never"]),
                            default="auto", show_default=True,
                            help="Color the text output (auto honours NO_COLOR and FORCE_COLOR).")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="peftdoctor")
def cli() -> None:
    """Find silent PEFT fine-tuning mistakes in scripts and checkpoints."""


@cli.command()
@click.argument("paths", nargs=-1, type=click.Path())
@select_option
@ignore_option
@extend_option
@config_option
@format_option
@output_option
@statistics_option
@quiet_option
@color_option
@click.option("--report-unused-noqa", is_flag=True, help="Report suppression comments that suppress nothing.")
@click.option("--fix", is_flag=True, help="Apply the fixes that are certainly safe.")
@click.option("--diff", "show_diff", is_flag=True, help="Show the fixes as a diff; write nothing.")
@click.option("--show-fixes", is_flag=True, help="Say what --fix changes (under each fixable finding; with --fix, "
                                                  "what it fixed per file).")
@click.option("--exit-zero", is_flag=True, help="Exit 0 even when there are findings (2 still means an error).")
@click.option("--stdin-filename", type=click.Path(), help="The file name for `-` (standard input): for the "
                                                           "report and to find its config.")
@click.option("--no-respect-gitignore", is_flag=True, help="Walk into what .gitignore and .ignore files leave out.")
@click.option("--no-cache", is_flag=True, envvar="PEFTDOCTOR_NO_CACHE",
              help="Read every file again; neither read nor write the cache.")
@click.option("--cache-dir", type=click.Path(file_okay=False), envvar="PEFTDOCTOR_CACHE_DIR",
              help="Where to keep the cache (default: .peftdoctor_cache at the project root).")
@click.option("--jobs", "-j", type=click.IntRange(min=1), default=None,
              help="Processes to check with (default: the number of cores).")
def check(paths, select, ignore, extend_select, config_file, fmt, output, statistics, quiet, color_flag,
          report_unused_noqa, fix, show_diff, show_fixes, exit_zero, stdin_filename, no_respect_gitignore,
          no_cache, cache_dir, jobs) -> None:
    """Lint training scripts and notebooks (files or folders; default: the current folder; `-`: standard input)."""
    paths = paths or (("-",) if stdin_filename else (".",))  # as ruff: --stdin-filename alone reads stdin
    overrides = overrides_of(select, ignore, extend_select, False if no_respect_gitignore else None)
    report = {"statistics": statistics, "quiet": quiet, "show_fixes": show_fixes, "tool_kind": "check"}
    if "-" in paths:
        if len(paths) > 1:
            raise UsageFailure("`-` (standard input) cannot be combined with other paths")
        findings = _check_stdin(check_configs(config_file, overrides), stdin_filename, report_unused_noqa, fix,
                                show_diff)
        if not (fix or show_diff):
            emit(fmt, findings, output, color=color_choice(color_flag), files_checked=1, **report)
        sys.exit(EXIT_CLEAN if exit_zero else exit_status(findings))
    try:
        result, protected = _recorded_check(
            paths, config_file, overrides, report_unused_noqa, output, fix, show_diff, show_fixes, quiet, exit_zero,
            no_cache, cache_dir, jobs, invocation={"paths": paths, "options": [
                select, ignore, extend_select, config_file, report_unused_noqa, no_respect_gitignore]})
    except ConfigError as exc:
        raise UsageFailure(str(exc)) from None
    if result.files_checked == 0:
        click.echo(f"peftdoctor: warning: no Python files found under {', '.join(map(str, paths))}", err=True)
    findings = sorted([*result.findings, *result.unused_suppressions], key=Finding.sort_key)
    emit(fmt, findings, output, protected, color=color_choice(color_flag), files_checked=result.files_checked,
         **report)
    sys.exit(EXIT_CLEAN if exit_zero else exit_status(findings))


def _recorded_check(paths, config_file, overrides, report_unused_noqa, output, fix, show_diff, show_fixes, quiet,
                    exit_zero, no_cache, cache_dir, jobs, invocation):
    """The check of `paths`, and the files an --output must not replace: from the record of the same command
    when nothing it read has changed (no parsing, no engine import; see run_record), else run (and recorded,
    when there is a cache)."""
    from peftdoctor import run_record
    from peftdoctor.project_root import find_project_root

    find_project_root.cache_clear()  # what an earlier run in this process found would go unnoted
    run_record.start_noting()
    try:
        configs = check_configs(config_file, overrides)
        cache = None if no_cache else _result_cache(paths, cache_dir)
        record = run_record.RunRecord(cache.folder, invocation) if cache is not None and not (fix or show_diff) \
            else None
        replayed = record.replay() if record is not None else None
        if replayed is not None:
            result, read = replayed
            check_output(output, read)
            return result, read
        from peftdoctor.engine import PathError, check_paths
        from peftdoctor.project_run import default_jobs
        from peftdoctor.versions import clear_caches

        clear_caches()
        try:
            if cache is not None:
                cache.prepare()  # made before the walk notes the project folder's state
            protected = checked_files(paths, configs) if output is not None else ()
            check_output(output, protected)
            result, changed = None, True
            if fix or show_diff:
                from peftdoctor.fix import apply_fixes

                changed, result = apply_fixes(paths, configs, write=fix and not show_diff, stream=sys.stdout,
                                              show=show_fixes, cache=cache, report_unused_noqa=report_unused_noqa,
                                              jobs=jobs or default_jobs())
                if show_diff:
                    if not changed and not quiet:
                        click.echo("peftdoctor: no fixes to apply", err=True)
                    sys.exit(EXIT_CLEAN if exit_zero or not changed else EXIT_FINDINGS)
            if changed:  # after fixes, what is left (a fix can change what other rules see)
                result = check_paths(paths, configs, report_unused_noqa=report_unused_noqa, cache=cache,
                                     jobs=jobs or default_jobs())
        except PathError as exc:
            raise UsageFailure(str(exc)) from None
    finally:
        notes = run_record.stop_noting()
    if record is not None:
        record.save(notes, result)
    return result, protected


def _check_stdin(configs, stdin_filename: str | None, report_unused_noqa: bool, fix: bool,
                 show_diff: bool) -> list[Finding]:
    """`check -`: the findings in standard input. With --fix the fixed text goes to stdout instead, as ruff
    does, and the findings left are those it does not fix; with --diff the diff, and the findings it fixes."""
    from peftdoctor.engine import check_source

    display = stdin_filename or "-"
    try:
        config = configs.for_path(stdin_filename or Path.cwd())
    except ConfigError as exc:
        raise UsageFailure(str(exc)) from None
    source = sys.stdin.read()
    result = check_source(source, display, config, report_unused_noqa)
    findings = sorted([*result.findings, *result.unused_suppressions], key=Finding.sort_key)
    if not (fix or show_diff):
        return findings
    import difflib

    from peftdoctor.fix import FixError, apply_edits

    edits = [f.extra["fix"] for f in findings if f.extra.get("fix")]
    try:
        fixed = apply_edits(source, edits) if edits else source
    except FixError as exc:
        raise UsageFailure(f"{display}: cannot fix: {exc}") from None
    if show_diff:
        name = Path(display).as_posix()
        sys.stdout.writelines(difflib.unified_diff(source.splitlines(keepends=True), fixed.splitlines(keepends=True),
                                                   fromfile=f"a/{name}", tofile=f"b/{name}"))
        return [f for f in findings if f.extra.get("fix")] if fixed != source else []
    sys.stdout.write(fixed)
    return [f for f in findings if not f.extra.get("fix")] if fixed != source else findings


def _result_cache(paths, cache_dir: str | None):
    from peftdoctor.cache import ResultCache, default_folder
    from peftdoctor.project_root import project_root_of

    if cache_dir:
        return ResultCache(Path(cache_dir))
    existing = [path for path in paths if Path(path).exists()]
    return ResultCache(default_folder(project_root_of(existing))) if existing else None


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--base", help="Base model folder (or a name in the local HF cache) for the deep checks; for a "
                             "model folder, the base its dtype and chat template are compared with.")
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
@statistics_option
@click.option("--quiet", "-q", is_flag=True, help="Print the findings and nothing else (no summary tables).")
@color_option
def inspect(paths, base, deep, device, dtype, device_map, no_merge_check, from_files, select, ignore,
            config_file, fmt, output, statistics, quiet, color_flag) -> None:
    """Check saved adapters (folders, multi-adapter saves or checkpoint-* runs).

    Two PATHs that are checkpoints of one adapter are also compared: PD709 names the tensors that did not change.
    """
    from peftdoctor.inspect.run import InputError, inspect_paths

    if from_files:
        paths = folders_of(paths)
    configs = check_configs(config_file, overrides_of(select, ignore, ()))
    check_output(output, paths)
    try:
        result = inspect_paths(
            paths,
            config=configs,
            base=base,
            deep=deep or base is not None,
            device=device,
            dtype=dtype,
            device_map=device_map,
            merge_check=not no_merge_check,
            show_summary=fmt == "text" and output is None and not (quiet or statistics),
            color=color_choice(color_flag),
        )
    except (InputError, ConfigError) as exc:
        raise UsageFailure(str(exc)) from None
    emit(fmt, result.findings, output, paths, color=color_choice(color_flag), files_checked=result.adapters_checked,
         noun="adapter", tool_kind="inspect", statistics=statistics, quiet=quiet, adapters=result.summaries)
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


@cli.command()
@click.argument("folder", default="peftdoctor-demo", type=click.Path(file_okay=False))
def demo(folder) -> None:
    """Write the bundled example script into FOLDER and check it.

    FOLDER defaults to ./peftdoctor-demo; no file is overwritten. Exits 0: the findings are the demo.
    """
    from peftdoctor.demo import DemoError, write_example
    from peftdoctor.engine import check_paths

    try:
        written = write_example(Path(folder))
    except DemoError as exc:
        raise UsageFailure(str(exc)) from None
    for path in written:
        click.echo(f"wrote {path}")
    click.echo(f"$ peftdoctor check {folder}")
    result = check_paths([folder], check_configs(None, overrides_of((), (), ())))
    emit("text", result.findings, None, files_checked=result.files_checked, tool_kind="check")
    click.echo(f"\nThe example is yours to edit: `peftdoctor check {folder}`, `peftdoctor check {folder} --diff`, "
               "`peftdoctor explain PD101`.")


@cli.command()
def server() -> None:
    """Run the language server for editors (LSP over stdio).

    Needs `pip install "peftdoctor[lsp]"`; the README shows how to wire it into VS Code and Neovim.
    """
    try:
        from peftdoctor.server import main as serve
    except ImportError as exc:
        raise UsageFailure(f"the language server needs pygls ({exc}): pip install \"peftdoctor[lsp]\"") from None
    serve()


def printable_streams() -> None:
    """Let stdout and stderr print every string: a lone surrogate (a file name that is not UTF-8, a \\ud800
    from a JSON file) or a character the terminal's encoding lacks (PYTHONIOENCODING=ascii) is written as its
    backslash escape, instead of ending the run in UnicodeEncodeError."""
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")


def main() -> None:
    printable_streams()
    try:
        cli(standalone_mode=True)
    except KeyboardInterrupt:  # pragma: no cover
        click.echo("peftdoctor: interrupted", err=True)
        sys.exit(EXIT_ERROR)


if __name__ == "__main__":  # pragma: no cover
    main()
