"""The documentation's reference has an entry, with a meaning, for everything a user can write.

The reference pages are generated from the code at every docs build (``docs/_ext/tomosweep_reference.py``):
the command line from the typer app, the study-file and data-file keys from the pydantic models, the
methods from their registry. These tests call the same generators and fail when a command-line option,
a study or data-file key or a method parameter has no entry or nothing to say about it (no ``help=``,
no docstring under the field, no ``doc`` in its ``Param``), and when a page of the documentation links
to an entry that does not exist. They need no Sphinx.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
sys.path.insert(0, str(DOCS / "_ext"))

import tomosweep_reference as reference  # noqa: E402

PAGES = sorted(p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md") if "_build" not in p.parts)


def _targets(page: str, directive: str) -> set[str]:
    return set(re.findall(rf"^\.\. {directive}:: (\S+)$", page, re.M))


def test_every_option_and_argument_of_every_command_has_an_entry():
    import typer

    from tomosweep.cli import app

    group = typer.main.get_command(app)
    page = reference.cli_page()
    programs = re.split(r"^\.\. program:: ", page, flags=re.M)[1:]
    options = {block.split("\n", 1)[0]: block for block in programs}
    commands = {"": group} | {name: group.commands[name] for name in group.list_commands(None)}
    assert set(options) == {f"tomosweep {name}".strip() for name in commands}
    for name, command in commands.items():
        block = options[f"tomosweep {name}".strip()]
        for param in command.params:
            assert param.help, f"tomosweep {name} {param.opts[0]}: no help= to show in the reference"
            shown = param.name.upper() if not param.opts[0].startswith("-") else param.opts[0]
            assert re.search(rf"^\.\. option:: .*{re.escape(shown)}\b", block, re.M), f"tomosweep {name} {shown}"


def _keys(model: type[BaseModel], prefix: str) -> set[str]:
    return {f"{prefix}{name}" for name in model.model_fields}


def test_every_study_file_key_has_an_entry_with_its_meaning():
    from tomosweep.cluster import ClusterSettings
    from tomosweep.plugins import PluginsSpec
    from tomosweep.sweep.spec import AcquisitionSpec, BudgetSpec, PhantomSpec, SearchRange, Study, TuneSpec

    page = reference.study_file_page()
    expected = (
        _keys(Study, "")
        | _keys(PhantomSpec, "phantom.")
        | _keys(AcquisitionSpec, "acquisition.")
        | _keys(BudgetSpec, "budget.")
        | _keys(PluginsSpec, "plugins.")
        | _keys(ClusterSettings, "cluster.")
        | _keys(TuneSpec, "data.")
        | _keys(SearchRange, "methods.<method>.<parameter>.")
    )
    assert expected <= _targets(page, "studykey"), sorted(expected - _targets(page, "studykey"))
    assert "(no description)" not in page


def test_every_data_file_key_has_an_entry_with_its_meaning():
    from tomosweep.series import DataFile
    from tomosweep.series.files import AlignSection, ChemSection, HaadfSection
    from tomosweep.sweep.spec import TuneSpec

    page = reference.data_file_page()
    expected = (
        _keys(DataFile, "")
        | _keys(HaadfSection, "haadf.")
        | _keys(ChemSection, "chem.")
        | _keys(AlignSection, "align.")
        | (_keys(TuneSpec, "tune.") - {"tune.file"})
    )
    assert expected <= _targets(page, "datakey"), sorted(expected - _targets(page, "datakey"))
    assert "(no description)" not in page


def test_every_method_parameter_has_an_entry_with_its_meaning():
    from tomosweep.sweep.methods import METHODS

    page = reference.methods_page()
    expected = {f"{method.name}.{param.name}" for method in METHODS.values() for param in method.params}
    assert expected <= _targets(page, "methodparam")
    assert set(METHODS) <= _targets(page, "studymethod")
    assert "(no description)" not in page


def test_nothing_lacks_a_meaning():
    assert reference.missing_meanings() == []


@pytest.fixture(scope="module")
def entries() -> dict[str, set]:
    """Every target of the generated reference, by its role."""
    methods = reference.methods_page()
    return {
        "studykey": _targets(reference.study_file_page(), "studykey"),
        "datakey": _targets(reference.data_file_page(), "datakey"),
        "methodparam": _targets(methods, "methodparam"),
        "studymethod": _targets(methods, "studymethod"),
        "option": {(f"tomosweep {e.command}".strip(), opt) for e in reference.cli_entries() for opt in e.opts},
    }


@pytest.mark.parametrize("page", PAGES)
def test_a_page_links_only_to_entries_that_exist(page, entries):
    text = (DOCS / page).read_text()
    for role in ("studykey", "datakey", "methodparam", "studymethod"):
        for name in re.findall(rf"\{{{role}\}}`([^`]+)`", text):
            assert name in entries[role], f"{page}: {{{role}}}`{name}` has no reference entry"
    for link in re.findall(r"\{option\}`([^`]+)`", text):
        program, _, option = link.rpartition(" ")
        assert (program, option) in entries["option"], f"{page}: {{option}}`{link}` is no option of {program}"


def test_the_readme_is_short_and_every_link_in_it_resolves():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 150
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", readme)
    assert links
    missing = [link for link in links if "://" not in link and not (ROOT / link).exists()]
    assert not missing, f"README links to files that do not exist: {missing}"
