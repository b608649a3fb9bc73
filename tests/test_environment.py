"""The pinned stack (constraints.txt) and the version record every result carries."""
from __future__ import annotations

import re
import tomllib

from conftest import ROOT
from llm_jepa import environment as E


def test_read_lock_normalizes_names_and_skips_comments(tmp_path):
    lock = tmp_path / "c.txt"
    lock.write_text("# a comment\nPyYAML==6.0.4\ntyping_extensions==4.16.0  # why\n\nfoo>=1\n")
    assert E.read_lock(lock) == {"pyyaml": "6.0.4", "typing-extensions": "4.16.0"}


def test_public_version_drops_the_local_label():
    assert E.public_version("2.13.0+cpu") == "2.13.0" and E.public_version("5.25.0") == "5.25.0"


def test_lock_differences_name_the_package_and_both_versions():
    have = E.installed_version("transformers")
    assert E.lock_differences({"transformers": have}) == {}
    assert E.lock_differences({"transformers": "0.0.1", "no-such-package-xyz": "1.0"}) == {
        "transformers": [have, "0.0.1"], "no-such-package-xyz": [None, "1.0"]}


def test_the_lock_pins_every_dependency_exactly():
    """Every package pyproject.toml asks for (with the test and eval extras) has an exact pin."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = project["dependencies"] + [d for extra in project["optional-dependencies"].values() for d in extra]
    names = {E.normalize(re.split(r"[<>=!~\[; ]", d, maxsplit=1)[0]) for d in wanted}
    pins = E.read_lock(ROOT / "constraints.txt")
    assert sorted(names - set(pins)) == []
    assert all(re.fullmatch(r"[0-9][0-9a-z.]*", v) for v in pins.values()), pins


def test_stack_record_and_line(tmp_path):
    record = E.stack_record()
    assert record["transformers"] == E.installed_version("transformers")
    assert record["torch_threads"] >= 1 and record["cpu_capability"]
    assert record["lock"]["file"] == "constraints.txt"
    line = E.stack_line(record)
    assert f"transformers {record['transformers']}" in line and "threads" in line
    lock = tmp_path / "constraints.txt"
    lock.write_text("transformers==0.0.1\n")
    other = E.stack_record(lock)
    assert other["lock"]["pinned_stack"] is False
    assert "NOT the pinned stack: transformers" in E.stack_line(other) and "(pinned 0.0.1)" in E.stack_line(other)
    assert E.stack_record(tmp_path / "missing.txt")["lock"] is None
