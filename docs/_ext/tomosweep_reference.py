"""The reference pages that are generated from the code, so that they cannot drift from it.

Run at every documentation build (a Sphinx extension: at ``config-inited`` it writes the pages into
``docs/reference/generated/`` before Sphinx reads its sources), and called by
``tests/test_docs_reference.py``, which fails when a command-line option, a study-file or
data-file key or a method parameter has no entry or no meaning:

* :func:`cli_page` walks the typer app (``typer.main.get_command``): every command, argument and
  option with its type, default and help;
* :func:`study_file_page` and :func:`data_file_page` walk the pydantic models of the study file
  (:class:`tomosweep.sweep.spec.Study`) and the data file (:class:`tomosweep.series.DataFile`):
  every key with its type, bounds, default and the field's description;
* :func:`methods_page` walks the method registry (:data:`tomosweep.sweep.methods.METHODS`):
  every method and parameter with its default, default search range and prior.

Each entry is a target of its own (``:option:`tomosweep run --store```,
``:studykey:`budget.trials_per_cell```, ``:datakey:`chem.sensitivity```,
``:methodparam:`fused.lambda_haadf```), defined once and linked from every other page.
"""

from __future__ import annotations

import enum
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

GENERATED = Path(__file__).resolve().parents[1] / "reference" / "generated"
_NOTICE = ".. Generated from the code by docs/_ext/tomosweep_reference.py at every build; do not edit.\n\n"


# -- text -----------------------------------------------------------------------------------------


def rst_text(text: str) -> str:
    """Help text written for a terminal, made safe for reStructuredText.

    Parameters
    ----------
    text : str
        A command's or option's help, or a method parameter's doc: plain text with
        Markdown-style ```code``` spans. (A field's description is a docstring, so
        reStructuredText already, and is used as it is.)

    Returns
    -------
    str
        The text with code spans as literals and the characters reStructuredText would read
        as markup escaped.
    """
    parts = text.replace("``", "`").split("`")
    out = []
    for i, part in enumerate(parts):
        if i % 2:  # inside a code span
            out.append(f"``{part}``" if part else "")
        else:
            for char in "\\*|":
                part = part.replace(char, "\\" + char)
            out.append(part.replace("_ ", "\\_ ").replace("_,", "\\_,").replace("_.", "\\_."))
    return "".join(out)


def _heading(title: str, char: str) -> str:
    return f"{title}\n{char * len(title)}\n\n"


def _indent(text: str, by: str = "   ") -> str:
    return "\n".join(by + line if line.strip() else "" for line in text.splitlines())


# -- the command line -------------------------------------------------------------------------------


@dataclass(frozen=True)
class CliEntry:
    """One argument or option of one command of the ``tomosweep`` app."""

    command: str  # "" for the app's own (global) options
    name: str  # the parameter's name in the code
    opts: tuple[str, ...]
    help: str
    type: str
    default: str | None
    required: bool
    argument: bool


def _annotation_text(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return " | ".join(str(m.value) for m in annotation)
    if origin is list:
        return f"{_annotation_text(typing.get_args(annotation)[0])}, repeatable"
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_annotation_text(a) for a in typing.get_args(annotation) if a is not type(None))
    if annotation is Path:
        return "path"
    return getattr(annotation, "__name__", str(annotation))


def _param_type(param: Any) -> str:
    if getattr(param, "count", False):
        return "count (repeat for more)"
    if getattr(param, "is_flag", False):
        return "flag"
    descriptor = getattr(param, "type_descriptor", None)  # typer ≥ 0.26
    if descriptor is not None:
        return _annotation_text(descriptor.annotation)
    return str(getattr(param.type, "name", param.type))


def _param_default(param: Any) -> str | None:
    default = param.default
    if param.required or default is None or getattr(param, "is_flag", False):
        return None
    if isinstance(default, enum.Enum):
        default = default.value
    return repr(default) if isinstance(default, str) else str(default)


def cli_command() -> Any:
    """The ``tomosweep`` command as click sees it (typer's :func:`typer.main.get_command`).

    Returns
    -------
    click.Group
        The app's group: its ``params`` are the global options, its ``commands`` the commands.
    """
    import typer

    from tomosweep.cli import app

    return typer.main.get_command(app)


def cli_entries() -> list[CliEntry]:
    """Every global option and every argument and option of every command, in help order.

    Returns
    -------
    list of CliEntry
        The app's own options first (``command == ""``), then each command's parameters.
    """
    group = cli_command()
    entries = []
    commands = [("", group)] + [(name, group.commands[name]) for name in group.list_commands(None)]
    for name, command in commands:
        for param in command.params:
            if getattr(param, "hidden", False):
                continue
            argument = not param.opts[0].startswith("-")
            entries.append(
                CliEntry(
                    command=name,
                    name=param.name,
                    opts=tuple(param.opts) + tuple(param.secondary_opts),
                    help=(getattr(param, "help", None) or "").strip(),
                    type=_param_type(param),
                    default=_param_default(param),
                    required=bool(param.required),
                    argument=argument,
                )
            )
    entries.append(CliEntry("", "help", ("--help",), "show the help and exit", "flag", None, False, False))
    return entries


def _option_signature(entry: CliEntry) -> str:
    if entry.argument:
        return entry.name.upper()
    value = "" if entry.type in ("flag", "count (repeat for more)") else f" <{entry.type.split(' ')[0]}>"
    return ", ".join(f"{opt}{value}" for opt in sorted(entry.opts, key=len))


def cli_page() -> str:
    """The command-line reference: every command with its arguments and options.

    Returns
    -------
    str
        A reStructuredText page; each option is a ``.. option::`` target of its command's
        ``.. program::``.
    """
    group = cli_command()
    entries = cli_entries()
    text = [_NOTICE, ".. _cli-reference:\n\n", _heading("Command line", "=")]
    text.append(
        "Every command of ``tomosweep``, in the order ``tomosweep --help`` lists them, with every argument "
        "and option. ``tomosweep COMMAND --help`` prints the same on the terminal. Exit status: 0 done, "
        "1 ``check`` found a problem, 2 a user error (one line starting ``error:``), 130 after Ctrl-C, "
        "143 after SIGTERM.\n\n"
    )
    commands = [("", group)] + [(name, group.commands[name]) for name in group.list_commands(None)]
    for name, command in commands:
        program = f"tomosweep {name}".strip()
        title = "Global options" if not name else f"``{program}``"
        text.append(f".. _cli-{name or 'global'}:\n\n")
        text.append(_heading(title, "-"))
        if name:
            text.append(rst_text((command.help or "").strip()) + "\n\n")
            usage = " ".join(
                [program, "[OPTIONS]"] + [e.name.upper() for e in entries if e.command == name and e.argument]
            )
            text.append(f"Usage: ``{usage}``\n\n")
        else:
            text.append("Given before the command: ``tomosweep [GLOBAL OPTIONS] COMMAND [ARGS]``.\n\n")
        text.append(f".. program:: {program}\n\n")
        for entry in (e for e in entries if e.command == name):
            facts = [f"type: {entry.type}"]
            if entry.required:
                facts.append("required")
            if entry.default is not None:
                facts.append(f"default: ``{entry.default}``")
            text.append(f".. option:: {_option_signature(entry)}\n\n")
            text.append(_indent(rst_text(entry.help) + f" ({'; '.join(facts)})") + "\n\n")
    return "".join(text)


# -- study and data files ---------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyEntry:
    """One key of a study or data file: its dotted path, its pydantic field, its section."""

    key: str  # "budget.trials_per_cell", "chem.elements.<element>.file"
    section: str  # "" (top level), "budget", "chem", …
    field: FieldInfo
    model: type[BaseModel]


def _models_in(annotation: Any) -> Iterator[tuple[str, type[BaseModel]]]:
    """The models a field's value may be, with the path part between the key and their keys."""
    origin = typing.get_origin(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield "", annotation
    elif origin is typing.Annotated:
        yield from _models_in(typing.get_args(annotation)[0])
    elif origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            yield from _models_in(arg)
    elif origin is dict:
        for suffix, model in _models_in(typing.get_args(annotation)[1]):
            yield ".<name>" + suffix, model


def _is_section(field: FieldInfo) -> bool:
    """A field whose value is a model and nothing else: a TOML table of its own."""
    annotation = field.annotation
    args = [a for a in typing.get_args(annotation) if a is not type(None)] or [annotation]
    return len(args) == 1 and isinstance(args[0], type) and issubclass(args[0], BaseModel)


# what a table's free keys stand for, by the dotted path of the table
_PLACEHOLDERS = {
    "methods.<name>.<name>.": "methods.<method>.<parameter>.",
    "chem.elements.<name>.": "chem.elements.<element>.",
}


def model_entries(
    model: type[BaseModel], prefix: str = "", section: str = "", *, skip: frozenset[str] = frozenset()
) -> Iterator[KeyEntry]:
    """Every key of ``model``, recursing into the models its fields hold.

    Parameters
    ----------
    model : type of pydantic.BaseModel
        The file's schema.
    prefix : str
        The dotted path of ``model`` inside the file ("" at the top).
    section : str
        The TOML table the keys are written in.
    skip : frozenset of str
        Top-level keys to leave out.

    Yields
    ------
    KeyEntry
        A key: a section's own entry comes before its keys.
    """
    for name, field in model.model_fields.items():
        if name in skip:
            continue
        key = f"{prefix}{name}"
        for generic, specific in _PLACEHOLDERS.items():
            key = key.replace(generic, specific)
        nested = list(_models_in(field.annotation))
        if nested and _is_section(field):
            yield KeyEntry(key, section, field, model)
            yield from model_entries(nested[0][1], f"{key}.", key)
            continue
        yield KeyEntry(key, section, field, model)
        for suffix, sub in nested:
            yield from model_entries(sub, f"{key}{suffix}.", section)


def study_entries() -> list[KeyEntry]:
    """Every key of a study file (:class:`tomosweep.sweep.spec.Study`).

    Returns
    -------
    list of KeyEntry
        Top-level keys, then each section's.
    """
    from tomosweep.sweep.spec import Study

    return list(model_entries(Study))


def data_entries() -> list[KeyEntry]:
    """Every key of a data file (:class:`tomosweep.series.DataFile`) and of its ``[tune]`` table.

    Returns
    -------
    list of KeyEntry
        Top-level keys, then each section's; ``tune.*`` are the keys of
        :class:`tomosweep.sweep.spec.TuneSpec` but ``file`` (the data file itself).
    """
    from tomosweep.series import DataFile
    from tomosweep.sweep.spec import TuneSpec

    entries = list(model_entries(DataFile))
    entries += [
        KeyEntry(f"tune.{e.key}", "tune", e.field, e.model) for e in model_entries(TuneSpec, skip=frozenset({"file"}))
    ]
    return entries


def _type_text(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is type(None):
        return ""
    if origin is typing.Literal:
        return " | ".join(f'"{a}"' if isinstance(a, str) else str(a) for a in args)
    if origin is typing.Annotated:
        return _type_text(args[0])
    if origin in (typing.Union, types.UnionType):
        return " or ".join(t for t in (_type_text(a) for a in args) if t)
    if origin is list:
        return f"list of {_type_text(args[0])}"
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"list of {_type_text(args[0])}"
        return "[" + ", ".join(_type_text(a) for a in args) + "]"
    if origin is dict:
        return f"table of {_type_text(args[0])} → {_type_text(args[1])}"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "table"
    if annotation is Any:
        return "any"
    return {"str": "string", "int": "integer", "float": "number", "bool": "true | false"}.get(
        getattr(annotation, "__name__", ""), getattr(annotation, "__name__", str(annotation))
    )


def _bounds(field: FieldInfo) -> str:
    words = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<"}
    parts = []
    for item in field.metadata:
        for attribute, sign in words.items():
            if isinstance(item, getattr(annotated_types, attribute.capitalize())):
                parts.append(f"{sign} {getattr(item, attribute):g}")
        if isinstance(item, annotated_types.MinLen):
            parts.append(f"at least {item.min_length} item{'s' if item.min_length != 1 else ''}")
    return ", ".join(parts)


def _toml(value: Any) -> str:
    if isinstance(value, BaseModel):
        return "the table's defaults"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + "}"
    return str(value)


def key_default(field: FieldInfo) -> str:
    """A key's default as a study file would write it, ``required``, or ``not set``.

    Parameters
    ----------
    field : pydantic.fields.FieldInfo
        The key's field.

    Returns
    -------
    str
        The default in TOML words.
    """
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if value is None or value is PydanticUndefined:
        return "not set"
    return _toml(value)


def _keys_page(title: str, label: str, role: str, intro: str, entries: list[KeyEntry], notes: dict[str, str]) -> str:
    text = [_NOTICE, f".. _{label}:\n\n", _heading(title, "="), intro, "\n\n"]
    for section in dict.fromkeys(e.section for e in entries):
        text.append(_heading("Top level" if not section else f"``[{section}]``", "-"))
        if section in notes:
            text.append(notes[section] + "\n\n")
        for entry in (e for e in entries if e.section == section):
            meaning = (entry.field.description or "").strip()
            facts = [f"type: {_type_text(entry.field.annotation) or 'any'}"]
            bounds = _bounds(entry.field)
            if bounds:
                facts.append(bounds)
            facts.append(f"default: ``{key_default(entry.field)}``")
            text.append(f".. {role}:: {entry.key}\n\n")
            text.append(_indent(f"*{'; '.join(facts)}*") + "\n\n")
            text.append(_indent(meaning or "(no description)") + "\n\n")
    return "".join(text)


def study_file_page() -> str:
    """The study-file reference: every key, its type, bounds, default and meaning.

    Returns
    -------
    str
        A reStructuredText page with one ``.. studykey::`` target per key.
    """
    intro = (
        "A study file is TOML (``examples/quickstart.toml`` is commented). Every key, with its type, "
        "bounds, default and meaning, from the model that validates it "
        "(:class:`tomosweep.sweep.spec.Study`). A key that is not listed here is refused by name."
    )
    from tomosweep.phantoms import SPECIMENS

    notes = {
        "phantom": "Built-in specimens: " + ", ".join(f"``{name}``" for name in SPECIMENS) + ".",
        "data": "Written by :ref:`tomosweep tune <cli-tune>` from a data file's ``[tune]`` table "
        "(:ref:`data-file-reference`); a study file of your own names a ``[phantom]`` instead.",
        "cluster": "Which keys apply depends on ``backend``; a key of another backend is an error. For the "
        "batch backends a key left out is read from the Dask configuration, ``jobqueue.<backend>.*`` "
        "(:doc:`/howto/slurm`).",
    }
    return _keys_page("Study file", "study-file-reference", "studykey", intro, study_entries(), notes)


def data_file_page() -> str:
    """The data-file reference: every key of a measured series' data file.

    Returns
    -------
    str
        A reStructuredText page with one ``.. datakey::`` target per key.
    """
    intro = (
        "A data file is TOML (``examples/measured_data.toml`` is commented): it names a measured "
        "HAADF series, one map series per element, their angles and calibration, read by "
        ":ref:`tomosweep reconstruct-data <cli-reconstruct-data>` and :ref:`tomosweep tune <cli-tune>`. "
        "Every key, from the model that validates it (:class:`tomosweep.series.DataFile`)."
    )
    notes = {
        "tune": "What :ref:`tomosweep tune <cli-tune>` adds to a study's ``[data]`` table; the keys "
        "``name``, ``seed``, ``device``, ``methods``, ``budget``, ``cluster`` and ``plugins`` of the data "
        "file mean what they mean in a study file (:ref:`study-file-reference`).",
    }
    return _keys_page("Data file", "data-file-reference", "datakey", intro, data_entries(), notes)


# -- methods ---------------------------------------------------------------------------------------


def methods_page() -> str:
    """The methods reference: every registered method and each of its parameters.

    Returns
    -------
    str
        A reStructuredText page with one ``.. studymethod::`` target per method and one
        ``.. methodparam::`` target per parameter (``fused.lambda_haadf``).
    """
    from tomosweep.sweep.methods import METHODS

    text = [_NOTICE, ".. _methods-reference:\n\n", _heading("Methods", "=")]
    text.append(
        "Every reconstruction method a study can sweep (``[methods.<name>]``) and every parameter, from the "
        "registry (:data:`tomosweep.sweep.methods.METHODS`); ``tomosweep methods`` prints the same. In a "
        'method table a number holds a parameter fixed and ``{ low = …, high = …, prior = "log" }`` '
        "searches it; a parameter left out keeps its default; a table left empty searches the parameters "
        'marked "searched by default" over their default ranges.\n\n'
    )
    for method in METHODS.values():
        text.append(_heading(f"``{method.name}``", "-"))
        text.append(f".. studymethod:: {method.name}\n\n")
        facts = [f"working set: about {method.memory_volumes:g} element volumes"]
        if method.prunable:
            facts.append("can be pruned (``[budget] prune``)")
        text.append(_indent(rst_text(method.doc) + f" ({'; '.join(facts)})") + "\n\n")
        for param in method.params:
            kind = "integer" if param.kind == "int" else "real"
            searched = "searched by default" if param.searched else "held at its default unless searched"
            text.append(f".. methodparam:: {method.name}.{param.name}\n\n")
            text.append(
                _indent(
                    f"*{kind}; default {param.default:g}; default range {param.low:g} – {param.high:g}, "
                    f"{param.prior} prior; {searched}*"
                )
                + "\n\n"
            )
            text.append(_indent(rst_text(param.doc) if param.doc else "(no description)") + "\n\n")
    return "".join(text)


# -- the Python API --------------------------------------------------------------------------------

#: the packages whose public names (``__all__``) make the Python API, in the order of the layers
API_PACKAGES = (
    "tomosweep.microscope",
    "tomosweep.sweep",
    "tomosweep.search",
    "tomosweep.phantoms",
    "tomosweep.series",
    "tomosweep.cluster",
    "tomosweep.view",
    "tomosweep.solvers",
    "tomosweep.results",
    "tomosweep",
)


def api_page() -> str:
    """The Python API: each package's docstring and a page per public name (autosummary).

    Returns
    -------
    str
        A reStructuredText page listing every name of each package's ``__all__``.
    """
    import importlib

    text = [_NOTICE, ".. _api-reference:\n\n", _heading("Python API", "=")]
    text.append(
        "Every public name of every package (its ``__all__``), with its numpydoc docstring. The command "
        "line is a thin layer over :mod:`tomosweep.sweep` (``run_study`` is ``tomosweep run``).\n\n"
    )
    for name in API_PACKAGES:
        module = importlib.import_module(name)
        text.append(_heading(f"``{name}``", "-"))
        text.append(f".. automodule:: {name}\n   :no-members:\n\n")
        text.append(f".. currentmodule:: {name}\n\n")
        text.append(".. autosummary::\n   :toctree: api\n   :nosignatures:\n\n")
        text.extend(f"   {member}\n" for member in module.__all__ if not member.startswith("_"))
        text.append("\n")
    return "".join(text)


# -- Sphinx -----------------------------------------------------------------------------------------

PAGES = {
    "cli.rst": cli_page,
    "study-file.rst": study_file_page,
    "data-file.rst": data_file_page,
    "methods.rst": methods_page,
    "api.rst": api_page,
}


def write_pages(folder: Path = GENERATED) -> list[Path]:
    """Write every generated reference page into ``folder``, each only when its text changed.

    Parameters
    ----------
    folder : pathlib.Path
        Where the pages go (``docs/reference/generated``).

    Returns
    -------
    list of pathlib.Path
        The pages.
    """
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, page in PAGES.items():
        path = folder / name
        text = page()
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
        paths.append(path)
    return paths


def missing_meanings() -> list[str]:
    """Every option, key and parameter whose reference entry would have no meaning to show.

    Returns
    -------
    list of str
        One line each, naming the entry and where its text belongs in the code.
    """
    missing = [
        f"option {('tomosweep ' + e.command).strip()} {e.opts[0]}: no help= in its typer.Option/Argument"
        for e in cli_entries()
        if not e.help
    ]
    for what, entries in (("study-file", study_entries()), ("data-file", data_entries())):
        missing += [
            f"{what} key {e.key}: no description (a docstring under {e.model.__name__}.{e.key.rsplit('.', 1)[-1]})"
            for e in entries
            if not (e.field.description or "").strip()
        ]
    from tomosweep.sweep.methods import METHODS

    missing += [
        f"method parameter {m.name}.{p.name}: no doc in its Param"
        for m in METHODS.values()
        for p in m.params
        if not p.doc.strip()
    ]
    return missing


def _generate(app: Any, config: Any) -> None:
    from sphinx.util import logging

    write_pages()
    for line in missing_meanings():
        logging.getLogger(__name__).warning("reference entry without a meaning: %s", line)


def setup(app: Any) -> dict[str, Any]:
    """Register the reference's target types and generate its pages before the sources are read.

    Parameters
    ----------
    app : sphinx.application.Sphinx
        The Sphinx application.

    Returns
    -------
    dict
        The extension's metadata.
    """
    app.add_object_type("studykey", "studykey", indextemplate="pair: %s; study-file key")
    app.add_object_type("datakey", "datakey", indextemplate="pair: %s; data-file key")
    app.add_object_type("studymethod", "studymethod", indextemplate="pair: %s; method")
    app.add_object_type("methodparam", "methodparam", indextemplate="pair: %s; method parameter")
    # config-inited: before autosummary (builder-inited) reads the API page to write its stubs
    app.connect("config-inited", _generate)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
