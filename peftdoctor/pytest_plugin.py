"""pytest plugin for peftdoctor (enabled with `pytest --peftdoctor`)."""


def pytest_addoption(parser):
    group = parser.getgroup("peftdoctor")
    group.addoption("--peftdoctor", action="store_true", default=False,
                    help="Lint .py files and inspect adapter folders under the test paths with peftdoctor.")
