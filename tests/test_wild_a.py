"""Messages and facts the wild sweep A corrected (no torch needed)."""

from __future__ import annotations

from pathlib import Path

from peftdoctor.config import Config
from peftdoctor.engine import check_paths

SCRIPTS = Path(__file__).resolve().parent.parent / "fixtures" / "scripts"


def test_pd105_hook_counts_the_adapters_of_one_model_not_of_all():
    """Two models each given 'default': the loader's new adapter is 'default_1' on the model it loads into."""
    [finding] = check_paths([SCRIPTS / "PD105" / "bad_diffusers_hook_two_models.py"], Config()).findings
    assert "new adapter 'default_1'" in finding.message
    assert "add_adapter at line 17 and line 18" in finding.message
