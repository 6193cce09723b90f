"""`peftdoctor server`: the checks as a language server (LSP over stdio), for editors.

A Python file open in the editor is checked on open, on every change and on save, as part of its
project (the workspace folder) the way `peftdoctor check` reads a project, with the editor's unsaved
text (and that of the other open files) standing in for the disk: same engine, same nearest config.
A Jupyter notebook, when the client syncs notebooks (LSP 3.17 notebook documents), is checked as `check`
reads a .ipynb (its code cells as one script, IPython lines masked) and each cell gets its own diagnostics.
Findings become diagnostics; the safe fixes of `check --fix` become code actions; hovering a
diagnostic shows its rule's doc. Needs pygls (`pip install "peftdoctor[lsp]"`), imported only here.
"""

from __future__ import annotations

import asyncio
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import libcst as cst
from lsprotocol import types
from pygls.lsp.server import LanguageServer
from pygls.uris import to_fs_path
from pygls.workspace import TextDocument

from peftdoctor import __version__
from peftdoctor.config import ConfigError, nearest_config
from peftdoctor.engine import PathError, check_buffer, check_notebook_buffer
from peftdoctor.finding import Finding, Severity
from peftdoctor.fix import FixError, apply_edits
from peftdoctor.notebook import CodeCell, Notebook, fixed_cell_source, mask_cell, notebook_of_cells
from peftdoctor.registry import doc_path, get_rule

SOURCE = "peftdoctor"
FIX_ALL = "source.fixAll.peftdoctor"
SEVERITIES = {
    Severity.ERROR: types.DiagnosticSeverity.Error,
    Severity.WARNING: types.DiagnosticSeverity.Warning,
    Severity.INFO: types.DiagnosticSeverity.Information,
}
# Jupyter notebooks, their Python cells and their markdown ones (synced too, so that cells are numbered as
# Jupyter numbers them in the messages that name another cell).
NOTEBOOK_SYNC = types.NotebookDocumentSyncOptions(notebook_selector=[types.NotebookDocumentFilterWithNotebook(
    notebook="jupyter-notebook", cells=[types.NotebookCellLanguage(language="python"),
                                        types.NotebookCellLanguage(language="markdown")])], save=True)
# Lines as LSP counts them (and Python's tokenizer): ended by \r\n, \n or \r.
LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+$")


class PeftdoctorServer(LanguageServer):
    """A pygls server that checks on one worker thread and remembers each open file's findings."""

    def __init__(self):
        super().__init__(SOURCE, __version__, notebook_document_sync=NOTEBOOK_SYNC)
        # One check at a time, in order, off the event loop: typing queues checks, and a check whose
        # text is no longer the editor's is skipped (see publish), so a burst of changes costs one check.
        self.checker = ThreadPoolExecutor(max_workers=1)
        self.findings: dict[str, list[Finding]] = {}  # by file or notebook cell URI
        self.cells_shown: dict[str, set[str]] = {}  # notebook URI -> its cells that were given diagnostics
        self.shown_errors: set[str] = set()


server = PeftdoctorServer()


def _lines(text: str) -> list[str]:
    return LINE.findall(text)


def _position(document: TextDocument, lines: list[str], line: int, column: int) -> types.Position:
    """LSP position of 0-based `line` and 0-based code-point `column` (clamped to the line)."""
    if line >= len(lines):
        return types.Position(line=len(lines), character=0)
    text = lines[line].rstrip("\r\n")
    return types.Position(line=line, character=document.position_codec.client_num_units(text[:max(column, 0)]))


def _range(document: TextDocument, lines: list[str], finding: Finding) -> types.Range:
    """The finding's span; a finding with no column (a whole file, a whole line) covers its line."""
    line = max(finding.line, 1) - 1
    if not finding.column:
        end_of_line = len(lines[line].rstrip("\r\n")) if line < len(lines) else 0
        return types.Range(start=_position(document, lines, line, 0),
                           end=_position(document, lines, line, end_of_line))
    start = _position(document, lines, line, finding.column - 1)
    if finding.end_line and finding.end_column:
        end = _position(document, lines, finding.end_line - 1, finding.end_column - 1)
    else:
        end = _position(document, lines, line, len(lines[line]) if line < len(lines) else 0)
    return types.Range(start=start, end=end)


def diagnostic(document: TextDocument, lines: list[str], finding: Finding) -> types.Diagnostic:
    rule = get_rule(finding.code)
    message = f"{finding.message}\nhint: {finding.hint}" if finding.hint else finding.message
    return types.Diagnostic(
        range=_range(document, lines, finding),
        message=message,
        severity=SEVERITIES[finding.severity],
        code=finding.code,
        code_description=types.CodeDescription(href=rule.url) if rule is not None else None,
        source=SOURCE,
        data=finding.extra.get("fix"),
    )


def findings_of(path: Path, text: str | Notebook, others: dict[Path, str],
                root: Path | None) -> tuple[list[Finding], str | None]:
    """The findings `check root` would report for this file (or notebook) were its unsaved text on disk, or a
    config error."""
    try:
        config = nearest_config(path)
    except ConfigError as exc:
        return [], f"peftdoctor: error: {exc}"
    if config.is_excluded(path):
        return [], None
    try:
        if isinstance(text, Notebook):
            return check_notebook_buffer(path, text, config, others, root).findings, None
        return check_buffer(path, text, config, others, root).findings, None
    except PathError as exc:  # a project folder that cannot be read
        return [], f"peftdoctor: error: {exc}"


def workspace_root(ls: PeftdoctorServer, path: Path) -> Path | None:
    """The innermost workspace folder holding the file: the project, as a folder given to `check` is."""
    folders = [Path(to_fs_path(folder.uri)) for folder in ls.workspace.folders.values() if to_fs_path(folder.uri)]
    if not folders and ls.workspace.root_path:
        folders = [Path(ls.workspace.root_path)]
    holding = [folder.resolve() for folder in folders if path.resolve().is_relative_to(folder.resolve())]
    return max(holding, key=lambda folder: len(folder.parts)) if holding else None


def _current(ls: PeftdoctorServer, uri: str, version) -> bool:
    return uri in ls.workspace.text_documents and ls.workspace.get_text_document(uri).version == version


def _is_cell(ls: PeftdoctorServer, uri: str) -> bool:
    return ls.workspace.get_notebook_document(cell_uri=uri) is not None


def _open_files(ls: PeftdoctorServer, but: str) -> dict[Path, str]:
    """The unsaved text of the open files other than `but` (notebook cells are no file a module imports)."""
    return {Path(other.path).resolve(): other.source for key, other in ls.workspace.text_documents.items()
            if key != but and key.startswith("file:") and not _is_cell(ls, key)}


async def publish(ls: PeftdoctorServer, uri: str) -> None:
    """Check the file as the editor has it now and publish the diagnostics, unless it changed meanwhile."""
    document = ls.workspace.get_text_document(uri)
    if not uri.startswith("file:") or not document.path.endswith(".py") or _is_cell(ls, uri):
        return  # an untitled buffer or a notebook's cell: nothing `check` would read as a file
    version, text = document.version, document.source
    others = _open_files(ls, uri)

    def check():
        path = Path(document.path)
        return findings_of(path, text, others, workspace_root(ls, path)) if _current(ls, uri, version) else None

    outcome = await asyncio.get_running_loop().run_in_executor(ls.checker, check)
    if outcome is None or not _current(ls, uri, version):
        return  # a newer text is queued, or the file was closed
    findings, error = outcome
    if error is not None and error not in ls.shown_errors:  # once per session, not on every keystroke
        ls.shown_errors.add(error)
        ls.window_show_message(types.ShowMessageParams(type=types.MessageType.Error, message=error))
    ls.findings[uri] = findings
    lines = _lines(text)
    ls.text_document_publish_diagnostics(types.PublishDiagnosticsParams(
        uri=uri, version=version, diagnostics=[diagnostic(document, lines, f) for f in findings]))


def _current_notebook(ls: PeftdoctorServer, uri: str, version: int) -> bool:
    notebook = ls.workspace.get_notebook_document(notebook_uri=uri)
    return notebook is not None and notebook.version == version


def _cell_kind(ls: PeftdoctorServer, cell: types.NotebookCell) -> str:
    """"code" for a Python cell; any other (markdown, another language) is skipped as a markdown cell is."""
    document = ls.workspace.get_text_document(cell.document)
    return "code" if cell.kind == types.NotebookCellKind.Code and document.language_id == "python" else "markdown"


def _in_own_cell(notebook: Notebook, finding: Finding) -> Finding:
    """A located finding whose safe fix (script lines) is made one on its cell's lines, or dropped when it would
    edit another cell."""
    fix = finding.extra.get("fix")
    if not fix:
        return finding
    where = notebook.locate(int(fix["line"]))
    extra = {key: value for key, value in finding.extra.items() if key != "fix"}
    if where is not None and where[0] == finding.cell:
        extra["fix"] = {**fix, "line": where[1]}
    return replace(finding, extra=extra)


async def publish_notebook(ls: PeftdoctorServer, uri: str) -> None:
    """Check the notebook as the editor has it now, as `check` checks a .ipynb, and publish each cell's
    diagnostics at lines of that cell (an empty list where a cell's findings went away), unless it changed
    meanwhile."""
    notebook = ls.workspace.get_notebook_document(notebook_uri=uri)
    if notebook is None or not uri.startswith("file:"):
        return  # an untitled notebook: nothing `check` would read
    version, path = notebook.version, Path(to_fs_path(uri))
    cell_uris = [cell.document for cell in notebook.cells]
    cells = [(_cell_kind(ls, cell), ls.workspace.get_text_document(cell.document).source) for cell in notebook.cells]
    others = _open_files(ls, uri)

    def check():
        if not _current_notebook(ls, uri, version):
            return None
        read = notebook_of_cells(cells, str(path))
        return read, *findings_of(path, read, others, workspace_root(ls, path))

    outcome = await asyncio.get_running_loop().run_in_executor(ls.checker, check)
    if outcome is None or not _current_notebook(ls, uri, version):
        return  # a newer text is queued, or the notebook was closed
    read, findings, error = outcome
    if error is not None and error not in ls.shown_errors:
        ls.shown_errors.add(error)
        ls.window_show_message(types.ShowMessageParams(type=types.MessageType.Error, message=error))
    by_cell: dict[str, list[Finding]] = {cell_uri: [] for cell_uri in cell_uris}
    first_code = read.cells[0].number if read.cells else None
    for finding in findings:
        number = finding.cell or first_code  # a finding on no line (the whole notebook): its first code cell
        if number is not None:
            by_cell[cell_uris[number - 1]].append(_in_own_cell(read, finding))
    for cell_uri in ls.cells_shown.get(uri, set()) - set(cell_uris):  # cells deleted since
        _clear(ls, cell_uri)
    ls.cells_shown[uri] = set(cell_uris)
    for cell_uri, cell_findings in by_cell.items():
        document = ls.workspace.get_text_document(cell_uri)
        ls.findings[cell_uri] = cell_findings
        lines = _lines(document.source)
        ls.text_document_publish_diagnostics(types.PublishDiagnosticsParams(uri=cell_uri, version=document.version,
                                                                            diagnostics=[diagnostic(document, lines, f)
                                                                                         for f in cell_findings]))


def _clear(ls: PeftdoctorServer, uri: str) -> None:
    ls.findings.pop(uri, None)
    ls.text_document_publish_diagnostics(types.PublishDiagnosticsParams(uri=uri, diagnostics=[]))


@server.feature(types.TEXT_DOCUMENT_DID_OPEN)
async def did_open(ls: PeftdoctorServer, params: types.DidOpenTextDocumentParams) -> None:
    await publish(ls, params.text_document.uri)


@server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
async def did_change(ls: PeftdoctorServer, params: types.DidChangeTextDocumentParams) -> None:
    await publish(ls, params.text_document.uri)


@server.feature(types.TEXT_DOCUMENT_DID_SAVE)
async def did_save(ls: PeftdoctorServer, params: types.DidSaveTextDocumentParams) -> None:
    """A saved file can change what the other open files see (a helper module, a pyproject.toml): all are checked,
    notebooks too."""
    saved = params.text_document.uri
    files = [saved, *(uri for uri in ls.workspace.text_documents if uri != saved)]
    await asyncio.gather(*(publish(ls, uri) for uri in files),
                         *(publish_notebook(ls, uri) for uri in list(ls.workspace.notebook_documents)))


@server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
def did_close(ls: PeftdoctorServer, params: types.DidCloseTextDocumentParams) -> None:
    _clear(ls, params.text_document.uri)


@server.feature(types.NOTEBOOK_DOCUMENT_DID_OPEN)
async def notebook_did_open(ls: PeftdoctorServer, params: types.DidOpenNotebookDocumentParams) -> None:
    await publish_notebook(ls, params.notebook_document.uri)


@server.feature(types.NOTEBOOK_DOCUMENT_DID_CHANGE)
async def notebook_did_change(ls: PeftdoctorServer, params: types.DidChangeNotebookDocumentParams) -> None:
    """Cells edited, added, removed or moved: the notebook is checked again (a moved cell changes the flow)."""
    await publish_notebook(ls, params.notebook_document.uri)


@server.feature(types.NOTEBOOK_DOCUMENT_DID_SAVE)
async def notebook_did_save(ls: PeftdoctorServer, params: types.DidSaveNotebookDocumentParams) -> None:
    await publish_notebook(ls, params.notebook_document.uri)


@server.feature(types.NOTEBOOK_DOCUMENT_DID_CLOSE)
def notebook_did_close(ls: PeftdoctorServer, params: types.DidCloseNotebookDocumentParams) -> None:
    """Every cell's diagnostics cleared (and those of any cell the last check published to)."""
    shown = ls.cells_shown.pop(params.notebook_document.uri, set())
    for cell_uri in dict.fromkeys([*(cell.uri for cell in params.cell_text_documents), *sorted(shown)]):
        _clear(ls, cell_uri)


def _text_edit(document: TextDocument, new: str) -> types.TextEdit:
    """One edit turning the document into `new`: only the lines that differ are replaced."""
    old_lines, new_lines = _lines(document.source), _lines(new)
    same_start = 0
    while same_start < min(len(old_lines), len(new_lines)) and old_lines[same_start] == new_lines[same_start]:
        same_start += 1
    same_end = 0
    while (same_end < min(len(old_lines), len(new_lines)) - same_start
           and old_lines[-1 - same_end] == new_lines[-1 - same_end]):
        same_end += 1
    end_line = len(old_lines) - same_end
    if end_line == len(old_lines) and old_lines and not old_lines[-1].endswith(("\n", "\r")):
        end = _position(document, old_lines, end_line - 1, len(old_lines[-1]))  # no final newline
    else:
        end = types.Position(line=end_line, character=0)
    return types.TextEdit(range=types.Range(start=types.Position(line=same_start, character=0), end=end),
                          new_text="".join(new_lines[same_start:len(new_lines) - same_end]))


def _fixed(ls: PeftdoctorServer, document: TextDocument, edits: list[dict]) -> str:
    """The document's text with the edits applied; a notebook cell's to its masked text (what the findings
    were read from), its IPython lines then put back, as `check --fix` edits a cell."""
    if not _is_cell(ls, document.uri):
        return apply_edits(document.source, edits)
    masked, placeholders = mask_cell(document.source)
    cell = CodeCell(index=0, number=1, first_line=1, source=document.source, masked=masked,
                    placeholders=placeholders)
    return fixed_cell_source(cell, apply_edits(masked, edits))


def _fix_action(ls: PeftdoctorServer, document: TextDocument, title: str, kind: str, edits: list[dict],
                diagnostics: list[types.Diagnostic]) -> types.CodeAction | None:
    try:
        new = _fixed(ls, document, edits)
    except (FixError, cst.ParserSyntaxError):  # a buffer that no longer parses: no action
        return None
    if new == document.source:
        return None
    change = types.TextDocumentEdit(
        text_document=types.OptionalVersionedTextDocumentIdentifier(uri=document.uri, version=document.version),
        edits=[_text_edit(document, new)])
    return types.CodeAction(title=title, kind=kind, diagnostics=diagnostics or None,
                            edit=types.WorkspaceEdit(document_changes=[change]))


def _fixes_of(ls: PeftdoctorServer, uri: str) -> list[dict]:
    return [f.extra["fix"] for f in ls.findings.get(uri, []) if f.extra.get("fix")]


@server.feature(types.TEXT_DOCUMENT_CODE_ACTION, types.CodeActionOptions(
    code_action_kinds=[types.CodeActionKind.QuickFix, FIX_ALL]))
def code_action(ls: PeftdoctorServer, params: types.CodeActionParams) -> list[types.CodeAction]:
    """A quick fix for each fixable finding asked about, and one action applying every safe fix."""
    document = ls.workspace.get_text_document(params.text_document.uri)
    wanted = params.context.only
    actions = []
    if not wanted or types.CodeActionKind.QuickFix in wanted:
        for item in params.context.diagnostics:
            if item.source == SOURCE and isinstance(item.data, dict):
                title = f"peftdoctor: set {item.data.get('keyword')}={item.data.get('value')} ({item.code})"
                actions.append(_fix_action(ls, document, title, types.CodeActionKind.QuickFix, [item.data], [item]))
    fixes = _fixes_of(ls, document.uri)
    if fixes and (not wanted or any(FIX_ALL.startswith(kind) for kind in wanted)):
        actions.append(_fix_action(ls, document, "peftdoctor: apply every safe fix", FIX_ALL, fixes, []))
    return [action for action in actions if action is not None]


def _covers(span: types.Range, where: types.Position) -> bool:
    after_start = (where.line, where.character) >= (span.start.line, span.start.character)
    return after_start and (where.line, where.character) <= (span.end.line, span.end.character)


def rule_doc(code: str) -> str:
    """The rule's markdown doc, or its one line when it has none."""
    found = doc_path(code)
    if found is not None:
        return found.read_text(encoding="utf-8")
    rule = get_rule(code)
    return f"**{code}** {rule.name}: {rule.summary}" if rule is not None else code


@server.feature(types.TEXT_DOCUMENT_HOVER)
def hover(ls: PeftdoctorServer, params: types.HoverParams) -> types.Hover | None:
    """The doc of each rule whose finding covers the hovered position."""
    document = ls.workspace.get_text_document(params.text_document.uri)
    lines = _lines(document.source)
    codes = []
    for finding in ls.findings.get(params.text_document.uri, []):
        if _covers(_range(document, lines, finding), params.position) and finding.code not in codes:
            codes.append(finding.code)
    if not codes:
        return None
    text = "\n\n---\n\n".join(rule_doc(code) for code in codes)
    return types.Hover(contents=types.MarkupContent(kind=types.MarkupKind.Markdown, value=text))


def main() -> None:
    server.start_io()
