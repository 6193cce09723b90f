"""PD501 on a BitsAndBytesConfig with no load_in_* flag: 4-bit from transformers 4.38 on (the truth is in
tests/test_truth_o.py::test_pd501_any_bitsandbytes_config_quantizes_even_with_no_flag_set), unquantized before."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from peftdoctor.config import Config
from peftdoctor.engine import check_paths
from peftdoctor.versions import clear_caches

SCRIPT = Path(__file__).resolve().parent.parent / "fixtures" / "scripts" / "PD501" / "bad_flagless_bnb_config.py"


@pytest.mark.parametrize(("pin", "fires"), [("transformers==4.37.2", False), ("transformers==4.38.0", True),
                                            ("transformers>=4.46,<5", True)])
def test_the_pinned_transformers_decides(tmp_path, pin, fires):
    (tmp_path / ".git").mkdir()
    (tmp_path / "requirements.txt").write_text(pin + "\n")
    shutil.copy(SCRIPT, tmp_path / "merge.py")
    clear_caches()
    codes = [f.code for f in check_paths([tmp_path], Config()).findings]
    assert ("PD501" in codes) is fires


def test_an_explicit_4bit_flag_fires_whatever_the_version(tmp_path):
    (tmp_path / ".git").mkdir()
    (tmp_path / "requirements.txt").write_text("transformers==4.37.2\n")
    (tmp_path / "merge.py").write_text(SCRIPT.read_text().replace(
        "BitsAndBytesConfig(llm_int8_enable_fp32_cpu_offload=True)", "BitsAndBytesConfig(load_in_4bit=True)"))
    clear_caches()
    assert "PD501" in [f.code for f in check_paths([tmp_path], Config()).findings]
