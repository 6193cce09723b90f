"""`peftdoctor server` end to end: pytest-lsp's client speaks LSP over stdio to the real server process."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest_lsp = pytest.importorskip("pytest_lsp")
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "fixtures" / "demo" / "train_lora.py"
PUBLISH = types.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS

HELPERS = '''from peft import LoraConfig, get_peft_model


def wrap(model):
    return get_peft_model(model, LoraConfig(r=8, target_modules=["q_proj"]))
'''
CALLER = '''from peft import PeftModel
from transformers import AutoModelForCausalLM

from helpers import wrap

base = AutoModelForCausalLM.from_pretrained("base")
model = wrap(base)
model = PeftModel.from_pretrained(model, "adapter")
'''

LOADER = '''from peft import PeftModel


def load_adapter(model, folder):
    return PeftModel.from_pretrained(model, folder)
'''
LOADER_CALLER = '''from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from src.loading import load_adapter

model = get_peft_model(AutoModelForCausalLM.from_pretrained("base"), LoraConfig(r=8, target_modules=["q_proj"]))
model = load_adapter(model, "adapter")
'''


@pytest_lsp.fixture(config=ClientServerConfig(server_command=[sys.executable, "-m", "peftdoctor", "server"]))
async def client(lsp_client: LanguageClient):
    await lsp_client.initialize_session(types.InitializeParams(
        capabilities=client_capabilities("visual-studio-code"), root_uri=None))
    yield
    await lsp_client.shutdown_session()


@pytest_lsp.fixture(config=ClientServerConfig(server_command=[sys.executable, "-m", "peftdoctor", "server"]))
async def workspace_client(lsp_client: LanguageClient, tmp_path: Path):
    """A client whose workspace folder is tmp_path (a folder with no project marker, as many repositories are)."""
    await lsp_client.initialize_session(types.InitializeParams(
        capabilities=client_capabilities("neovim"),
        workspace_folders=[types.WorkspaceFolder(uri=tmp_path.as_uri(), name="workspace")]))
    yield
    await lsp_client.shutdown_session()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project folder (its pyproject.toml marks the root) holding a copy of the demo script."""
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n", encoding="utf-8")
    shutil.copy(DEMO, tmp_path / "train_lora.py")
    return tmp_path


async def _diagnostics(client: LanguageClient, send) -> list[types.Diagnostic]:
    """Send one notification and return the diagnostics the server publishes in answer."""
    published = client.protocol.wait_for_notification_async(PUBLISH)
    send()
    return list((await published).diagnostics)


async def _open(client: LanguageClient, path: Path, text: str | None = None) -> list[types.Diagnostic]:
    text = path.read_text(encoding="utf-8") if text is None else text
    return await _diagnostics(client, lambda: client.text_document_did_open(types.DidOpenTextDocumentParams(
        text_document=types.TextDocumentItem(uri=path.as_uri(), language_id="python", version=1, text=text))))


async def _change(client: LanguageClient, path: Path, text: str, version: int) -> list[types.Diagnostic]:
    return await _diagnostics(client, lambda: client.text_document_did_change(types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri=path.as_uri(), version=version),
        content_changes=[types.TextDocumentContentChangeWholeDocument(text=text)])))


def _cli_check(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "peftdoctor", "check", "--no-cache", *args],
                          cwd=cwd, check=False, capture_output=True, text=True, timeout=300)


def _apply(text: str, edit: types.TextEdit) -> str:
    lines = text.splitlines(keepends=True)
    start = sum(len(line) for line in lines[:edit.range.start.line]) + edit.range.start.character
    end = sum(len(line) for line in lines[:edit.range.end.line]) + edit.range.end.character
    return text[:start] + edit.new_text + text[end:]


@pytest.mark.asyncio
async def test_open_publishes_what_check_reports(client: LanguageClient, project: Path):
    script = project / "train_lora.py"
    diagnostics = await _open(client, script)
    cli = _cli_check("--format", "json", "train_lora.py", cwd=project)
    expected = [(f["code"], f["line"], f["column"], f["end_line"], f["end_column"])
                for f in json.loads(cli.stdout)["findings"]]
    got = [(d.code, d.range.start.line + 1, d.range.start.character + 1, d.range.end.line + 1,
            d.range.end.character + 1) for d in diagnostics]
    assert got == expected and {code for code, *_ in got} == {"PD101", "PD103", "PD302", "PD404"}
    first = diagnostics[0]
    assert first.source == "peftdoctor" and first.severity == types.DiagnosticSeverity.Error
    assert first.code_description.href.endswith(f"rules/{first.code}.md")
    assert "hint: " in first.message


@pytest.mark.asyncio
async def test_columns_are_utf16_as_lsp_counts_them(client: LanguageClient, project: Path):
    """An emoji is one character to Python and two UTF-16 units to the editor: the range must use the latter."""
    script = project / "wrap.py"
    script.write_text('from peft import PeftModel\n\nmodel = PeftModel.from_pretrained(None, "a")\n'
                      'tag = "\U0001f917"; again = PeftModel.from_pretrained(model, "\U0001f917")\n', encoding="utf-8")
    (diagnostic,) = await _open(client, script)
    cli = _cli_check("--format", "json", "wrap.py", cwd=project)
    (finding,) = json.loads(cli.stdout)["findings"]
    assert diagnostic.code == finding["code"] == "PD101" and finding["line"] == 4
    # 0-based is column - 1; one emoji (one extra unit) lies before the start, two before the end
    assert (diagnostic.range.start.character, diagnostic.range.end.character) == \
        (finding["column"], finding["end_column"] + 1)


@pytest.mark.asyncio
async def test_unsaved_text_is_checked_not_the_disk(client: LanguageClient, project: Path):
    script = project / "train_lora.py"
    on_disk = script.read_text(encoding="utf-8")
    await _open(client, script)
    fixed = on_disk.replace("PeftModel.from_pretrained(model, args.resume)",
                            "PeftModel.from_pretrained(model, args.resume, is_trainable=True)")
    diagnostics = await _change(client, script, fixed, 2)
    assert "PD103" not in {d.code for d in diagnostics} and "PD101" in {d.code for d in diagnostics}
    broken = await _change(client, script, fixed + "\nx = (\n", 3)  # mid-edit: a syntax error, not a crash
    assert [d.code for d in broken] == ["PD000"]
    assert script.read_text(encoding="utf-8") == on_disk


@pytest.mark.asyncio
async def test_facts_follow_imports_into_disk_files_and_unsaved_buffers(client: LanguageClient, tmp_path: Path):
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n", encoding="utf-8")
    helpers, caller = tmp_path / "helpers.py", tmp_path / "train.py"
    helpers.write_text(HELPERS, encoding="utf-8")
    caller.write_text(CALLER, encoding="utf-8")
    diagnostics = await _open(client, caller)
    assert [(d.code, d.range.start.line) for d in diagnostics] == [("PD101", 7)]  # wrap() is get_peft_model
    # helpers.py edited in the editor, not saved: the caller's next check reads the buffer
    await _open(client, helpers, HELPERS.replace('return get_peft_model(model, LoraConfig(r=8, target_modules=["q_proj"]))',
                                                 "return model"))
    diagnostics = await _change(client, caller, CALLER + "\n", 2)
    assert diagnostics == []


@pytest.mark.asyncio
async def test_callers_in_the_workspace_are_read_as_check_reads_the_folder(workspace_client: LanguageClient,
                                                                           tmp_path: Path):
    """A helper that loads an adapter is fine alone; the workspace's main passes it a PeftModel: `check .` flags
    the helper's line, and so does the editor, though the helper's project root (no marker) is its own folder."""
    (tmp_path / "src").mkdir()
    helper = tmp_path / "src" / "loading.py"
    helper.write_text(LOADER, encoding="utf-8")
    (tmp_path / "main.py").write_text(LOADER_CALLER, encoding="utf-8")
    (expected,) = json.loads(_cli_check("--format", "json", ".", cwd=tmp_path).stdout)["findings"]
    assert json.loads(_cli_check("--format", "json", "src/loading.py", cwd=tmp_path).stdout)["findings"] == []
    (diagnostic,) = await _open(workspace_client, helper)
    assert (diagnostic.code, diagnostic.range.start.line + 1, diagnostic.range.start.character + 1) == \
        (expected["code"], expected["line"], expected["column"]) == ("PD101", 5, 12)
    assert "main.py:6" in diagnostic.message


@pytest.mark.asyncio
async def test_config_applies_and_a_broken_one_is_one_message(client: LanguageClient, project: Path):
    (project / "pyproject.toml").write_text("[tool.peftdoctor]\nignore = ['PD404', 'PD3']\n", encoding="utf-8")
    diagnostics = await _open(client, project / "train_lora.py")
    assert sorted(d.code for d in diagnostics) == ["PD101", "PD103"]
    (project / "pyproject.toml").write_text("[tool.peftdoctor]\nignore = 'PD404\n", encoding="utf-8")
    shown = client.protocol.wait_for_notification_async(types.WINDOW_SHOW_MESSAGE)
    diagnostics = await _diagnostics(client, lambda: client.text_document_did_save(types.DidSaveTextDocumentParams(
        text_document=types.TextDocumentIdentifier(uri=(project / "pyproject.toml").as_uri()))))
    message = (await shown).message
    assert diagnostics == [] and message.startswith("peftdoctor: error: ") and "pyproject.toml" in message
    assert "\n" not in message and "Traceback" not in message


@pytest.mark.asyncio
async def test_code_actions_make_the_same_edit_as_check_fix(client: LanguageClient, project: Path, tmp_path_factory):
    script = project / "train_lora.py"
    text = script.read_text(encoding="utf-8")
    diagnostics = await _open(client, script)
    pd103 = next(d for d in diagnostics if d.code == "PD103")
    actions = await client.text_document_code_action_async(types.CodeActionParams(
        text_document=types.TextDocumentIdentifier(uri=script.as_uri()), range=pd103.range,
        context=types.CodeActionContext(diagnostics=diagnostics)))
    quick = [a for a in actions if a.kind == types.CodeActionKind.QuickFix]
    assert [a.diagnostics[0].code for a in quick] == ["PD103"]  # the other findings have no safe fix
    (edit,) = quick[0].edit.document_changes[0].edits
    assert edit.range.start.line == edit.range.end.line - 1 == pd103.range.start.line  # one line replaced
    other = tmp_path_factory.mktemp("fixed") / "train_lora.py"
    shutil.copy(DEMO, other)
    _cli_check("--fix", str(other), cwd=other.parent)
    assert "PeftModel.from_pretrained(model, args.resume, is_trainable=True)" in other.read_text(encoding="utf-8")
    assert _apply(text, edit) == other.read_text(encoding="utf-8")
    fix_all = [a for a in actions if a.kind == "source.fixAll.peftdoctor"]
    assert _apply(text, fix_all[0].edit.document_changes[0].edits[0]) == other.read_text(encoding="utf-8")


@pytest.mark.asyncio
async def test_hover_shows_the_rule_doc(client: LanguageClient, project: Path):
    script = project / "train_lora.py"
    diagnostics = await _open(client, script)
    pd101 = next(d for d in diagnostics if d.code == "PD101")
    hover = await client.text_document_hover_async(types.HoverParams(
        text_document=types.TextDocumentIdentifier(uri=script.as_uri()), position=pd101.range.start))
    assert hover.contents.kind == types.MarkupKind.Markdown
    assert hover.contents.value == (REPO / "rules" / "PD101.md").read_text(encoding="utf-8")
    nothing = await client.text_document_hover_async(types.HoverParams(
        text_document=types.TextDocumentIdentifier(uri=script.as_uri()), position=types.Position(line=0, character=0)))
    assert nothing is None


@pytest.mark.asyncio
async def test_close_clears_the_diagnostics(client: LanguageClient, project: Path):
    script = project / "train_lora.py"
    assert await _open(client, script)
    cleared = await _diagnostics(client, lambda: client.text_document_did_close(types.DidCloseTextDocumentParams(
        text_document=types.TextDocumentIdentifier(uri=script.as_uri()))))
    assert cleared == []


def test_server_without_pygls_is_one_line():
    """The light install has no pygls: `peftdoctor server` says what to install, exit 2, no traceback."""
    code = ("import sys; sys.modules['pygls'] = None; sys.argv = ['peftdoctor', 'server']\n"
            "from peftdoctor.cli import main; main()")
    done = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("peftdoctor: error: the language server needs pygls")
    assert 'pip install "peftdoctor[lsp]"' in done.stderr and done.stderr.count("\n") == 1


def test_check_never_imports_pygls(project: Path):
    code = ("import sys; from peftdoctor.cli import main; sys.argv = ['peftdoctor', 'check', '--no-cache', '.']\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pygls', 'lsprotocol')))")
    done = subprocess.run([sys.executable, "-c", code], cwd=project, check=False, capture_output=True, text=True,
                          timeout=300)
    assert done.stdout.strip().endswith("[]")


# ------------------------------------------------------------------------------------------------- notebooks

NOTEBOOK_CELLS = [  # (kind, text): a magic line, a markdown cell, a double wrap across cells 3 and 4
    ("code", ("%pip install peft\nfrom peft import LoraConfig, PeftModel, get_peft_model\n"
              "from transformers import AutoModelForCausalLM, Trainer, TrainingArguments\n")),
    ("markdown", "# Train"),
    ("code", ('model = AutoModelForCausalLM.from_pretrained("base")\n'
              'model = get_peft_model(model, LoraConfig(r=8, target_modules=["q_proj"], task_type="CAUSAL_LM"))\n')),
    ("code", 'model = PeftModel.from_pretrained(model, "adapter")'),
    ("code", ('!nvidia-smi\n'
              'resumed = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained("base"), "adapter")\n'
              'Trainer(model=resumed, args=TrainingArguments("out")).train()')),
]


def _notebook_capabilities() -> types.ClientCapabilities:
    """VS Code's capabilities with notebook sync, which VS Code declares since 1.74 (pytest-lsp's copy is older)."""
    capabilities = client_capabilities("visual-studio-code")
    capabilities.notebook_document = types.NotebookDocumentClientCapabilities(
        synchronization=types.NotebookDocumentSyncClientCapabilities())
    return capabilities


@pytest_lsp.fixture(config=ClientServerConfig(server_command=[sys.executable, "-m", "peftdoctor", "server"]))
async def notebook_client(lsp_client: LanguageClient):
    result = await lsp_client.initialize_session(types.InitializeParams(capabilities=_notebook_capabilities()))
    lsp_client.server_capabilities = result.capabilities
    yield
    await lsp_client.shutdown_session()


def _write_notebook(path: Path, cells: list[tuple[str, str]]) -> None:
    """The cells as Jupyter saves them, for the CLI to check the same notebook the editor has open."""
    extra = {"code": {"outputs": [], "execution_count": None}, "markdown": {}}
    path.write_text(json.dumps({"cells": [{"cell_type": kind, "metadata": {}, "source": text, **extra[kind]}
                                          for kind, text in cells],
                                "metadata": {}, "nbformat": 4, "nbformat_minor": 5}, indent=1), encoding="utf-8")


def _cell_uri(notebook: Path, number: int) -> str:
    """A cell URI as VS Code makes them: its own scheme, the notebook's path, a quoted fragment."""
    return f"vscode-notebook-cell:{notebook}#W{number}sZmlsZQ%3D%3D"


async def _published(client: LanguageClient, send, uris: list[str]) -> dict[str, list[types.Diagnostic]]:
    """Send one notification and wait until the server has published for each of `uris`."""
    for uri in uris:
        client.diagnostics.pop(uri, None)
    send()
    async with asyncio.timeout(120):
        while any(uri not in client.diagnostics for uri in uris):
            await asyncio.sleep(0.05)
    return {uri: list(client.diagnostics[uri]) for uri in uris}


async def _open_notebook(client: LanguageClient, path: Path, cells=NOTEBOOK_CELLS):
    uris = [_cell_uri(path, number) for number in range(1, len(cells) + 1)]
    kinds = {"code": types.NotebookCellKind.Code, "markdown": types.NotebookCellKind.Markup}
    params = types.DidOpenNotebookDocumentParams(
        notebook_document=types.NotebookDocument(
            uri=path.as_uri(), notebook_type="jupyter-notebook", version=1,
            cells=[types.NotebookCell(kind=kinds[kind], document=uri) for (kind, _), uri in zip(cells, uris)]),
        cell_text_documents=[types.TextDocumentItem(uri=uri, language_id="python" if kind == "code" else "markdown",
                                                    version=1, text=text) for (kind, text), uri in zip(cells, uris)])
    return uris, await _published(client, lambda: client.notebook_document_did_open(params), uris)


def _cell_edit(notebook: Path, version: int, cell_uri: str, cell_version: int, old: str, new: str):
    """A notebook change: one cell's text `old` replaced by `new`, sent as a range edit (as VS Code sends cells)."""
    lines = old.split("\n")
    whole = types.Range(start=types.Position(line=0, character=0),
                        end=types.Position(line=len(lines) - 1, character=len(lines[-1])))
    return types.DidChangeNotebookDocumentParams(
        notebook_document=types.VersionedNotebookDocumentIdentifier(uri=notebook.as_uri(), version=version),
        change=types.NotebookDocumentChangeEvent(cells=types.NotebookDocumentCellChanges(text_content=[
            types.NotebookDocumentCellContentChanges(
                document=types.VersionedTextDocumentIdentifier(uri=cell_uri, version=cell_version),
                changes=[types.TextDocumentContentChangePartial(range=whole, text=new)])])))


def _cell_splice(notebook: Path, version: int, start: int, delete_count: int, cells=(), closed=()):
    """A notebook change: `delete_count` cells from `start` replaced by the code cells `cells` (URIs already open:
    a move), the cells `closed` deleted."""
    array = types.NotebookCellArrayChange(start=start, delete_count=delete_count, cells=[
        types.NotebookCell(kind=types.NotebookCellKind.Code, document=uri) for uri in cells])
    return types.DidChangeNotebookDocumentParams(
        notebook_document=types.VersionedNotebookDocumentIdentifier(uri=notebook.as_uri(), version=version),
        change=types.NotebookDocumentChangeEvent(cells=types.NotebookDocumentCellChanges(
            structure=types.NotebookDocumentCellChangeStructure(
                array=array, did_close=[types.TextDocumentIdentifier(uri=uri) for uri in closed]))))


def _spans(diagnostics: list[types.Diagnostic]) -> list[tuple]:
    return [(d.code, d.range.start.line + 1, d.range.start.character + 1, d.range.end.line + 1,
             d.range.end.character + 1) for d in diagnostics]


@pytest.mark.asyncio
async def test_notebook_cells_get_what_check_reports(notebook_client: LanguageClient, project: Path):
    sync = notebook_client.server_capabilities.notebook_document_sync
    assert sync.save and sync.notebook_selector[0].notebook == "jupyter-notebook"
    notebook = project / "train.ipynb"
    _write_notebook(notebook, NOTEBOOK_CELLS)
    uris, published = await _open_notebook(notebook_client, notebook)
    cli = json.loads(_cli_check("--format", "json", "train.ipynb", cwd=project).stdout)["findings"]
    expected = {uri: [] for uri in uris}
    for f in cli:
        expected[uris[f["cell"] - 1]].append((f["code"], f["line"], f["column"], f["end_line"], f["end_column"]))
    assert {uri: _spans(found) for uri, found in published.items()} == expected
    # the double wrap is flagged where the second wrap is: cell 4, line 1; the magic of cell 1 is no syntax error
    assert [code for code, *_ in expected[uris[3]]] == ["PD101"] and expected[uris[3]][0][1] == 1
    assert [code for code, *_ in expected[uris[4]]] == ["PD103"] and expected[uris[4]][0][1] == 2
    assert "cell 3, line 2" in published[uris[3]][0].message
    hover = await notebook_client.text_document_hover_async(types.HoverParams(
        text_document=types.TextDocumentIdentifier(uri=uris[3]), position=published[uris[3]][0].range.start))
    assert hover.contents.value == (REPO / "rules" / "PD101.md").read_text(encoding="utf-8")


@pytest.mark.asyncio
async def test_notebook_facts_follow_imports_and_a_broken_cell_is_its_own(notebook_client: LanguageClient,
                                                                          tmp_path: Path):
    """The notebook's folder is its project: a helper module that wraps the model counts. A cell that does not
    parse gets its PD000, and the other cells are still checked."""
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n", encoding="utf-8")
    (tmp_path / "helpers.py").write_text(HELPERS, encoding="utf-8")
    cells = [("code", "!pip install peft\nfrom peft import PeftModel\nfrom helpers import wrap\n"),
             ("code", "model = wrap(base)\n"),
             ("code", "for x in (:\n"),
             ("code", 'model = PeftModel.from_pretrained(model, "adapter")\n')]
    uris, published = await _open_notebook(notebook_client, tmp_path / "explore.ipynb", cells)
    assert [(d.code, d.range.start.line) for d in published[uris[2]]] == [("PD000", 0)]
    assert [(d.code, d.range.start.line) for d in published[uris[3]]] == [("PD101", 0)]
    assert published[uris[0]] == published[uris[1]] == []


@pytest.mark.asyncio
async def test_notebook_edits_recheck_and_close_clears(notebook_client: LanguageClient, project: Path):
    notebook = project / "train.ipynb"
    uris, published = await _open_notebook(notebook_client, notebook)
    assert [d.code for d in published[uris[3]]] == ["PD101"]

    def change(params, cells=uris):
        return _published(notebook_client, lambda: notebook_client.notebook_document_did_change(params), cells)

    # cell 4 edited to load the adapter into the PeftModel: its diagnostic goes, cell 5's stays
    loaded = 'model.load_adapter("adapter", adapter_name="b")'
    published = await change(_cell_edit(notebook, 2, uris[3], 2, NOTEBOOK_CELLS[3][1], loaded))
    assert published[uris[3]] == [] and [d.code for d in published[uris[4]]] == ["PD103"]
    published = await change(_cell_edit(notebook, 3, uris[3], 3, loaded, NOTEBOOK_CELLS[3][1]))
    assert [d.code for d in published[uris[3]]] == ["PD101"]
    # cell 4 moved above cell 3: the adapter is loaded before the wrap, onto no PeftModel
    published = await change(_cell_splice(notebook, 4, 2, 2, cells=[uris[3], uris[2]]))
    assert published[uris[3]] == [] and [d.code for d in published[uris[4]]] == ["PD103"]
    # the last cell deleted: its diagnostics are cleared too
    published = await change(_cell_splice(notebook, 5, 4, 1, closed=[uris[4]]))
    assert all(found == [] for found in published.values())
    # saved: checked again, the same diagnostics
    published = await _published(notebook_client, lambda: notebook_client.notebook_document_did_save(
        types.DidSaveNotebookDocumentParams(notebook_document=types.NotebookDocumentIdentifier(
            uri=notebook.as_uri()))), uris[:4])
    assert all(found == [] for found in published.values())
    # a double wrap within cell 3, then the notebook closed: every cell is cleared
    twice = NOTEBOOK_CELLS[2][1] + 'model = PeftModel.from_pretrained(model, "adapter")\n'
    published = await change(_cell_edit(notebook, 6, uris[2], 2, NOTEBOOK_CELLS[2][1], twice), uris[:4])
    assert [(d.code, d.range.start.line) for d in published[uris[2]]] == [("PD101", 2)]
    cleared = await _published(notebook_client, lambda: notebook_client.notebook_document_did_close(
        types.DidCloseNotebookDocumentParams(
            notebook_document=types.NotebookDocumentIdentifier(uri=notebook.as_uri()),
            cell_text_documents=[types.TextDocumentIdentifier(uri=uri) for uri in uris[:4]])), uris[:4])
    assert all(found == [] for found in cleared.values())


@pytest.mark.asyncio
async def test_notebook_quick_fix_edits_the_cell(notebook_client: LanguageClient, project: Path):
    """The fix of a cell targets the cell's URI at its own lines and leaves its shell line alone; the result is
    the cell `check --fix` writes."""
    notebook = project / "train.ipynb"
    _write_notebook(notebook, NOTEBOOK_CELLS)
    uris, published = await _open_notebook(notebook_client, notebook)
    (pd103,) = published[uris[4]]
    actions = await notebook_client.text_document_code_action_async(types.CodeActionParams(
        text_document=types.TextDocumentIdentifier(uri=uris[4]), range=pd103.range,
        context=types.CodeActionContext(diagnostics=[pd103], only=[types.CodeActionKind.QuickFix])))
    (action,) = actions
    (change,) = action.edit.document_changes
    (edit,) = change.edits
    assert change.text_document.uri == uris[4] and edit.range.start.line == 1
    _cli_check("--fix", "train.ipynb", cwd=project)
    on_disk = json.loads(notebook.read_text(encoding="utf-8"))["cells"][4]["source"]
    assert "is_trainable=True" in "".join(on_disk)
    assert _apply(NOTEBOOK_CELLS[4][1], edit) == "".join(on_disk)
    assert _apply(NOTEBOOK_CELLS[4][1], edit).startswith("!nvidia-smi\n")
