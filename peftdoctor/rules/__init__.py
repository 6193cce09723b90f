"""Static rules. Importing this package registers every rule in it."""

from peftdoctor.finding import Severity
from peftdoctor.registry import Rule, register

register(Rule("PD000", "syntax-error", "A script does not parse; nothing else in it was checked.",
              Severity.ERROR, kind="parse"))
register(Rule("PD001", "unused-suppression", "A noqa / peftdoctor: ignore comment suppresses nothing.",
              Severity.WARNING, kind="meta"))
