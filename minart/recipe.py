"""Recipes: YAML files describing a render, validated completely before any work is done.

A recipe names steps, each running one registered stage (:mod:`minart.registry`) on the results
of earlier steps, and says which results go to which files::

    name: ocean
    seed: 7
    size: [256, 256]
    steps:
      base:   {stage: fractal, params: {power: 7}}
      soften: {stage: perona_malik, input: base, params: {steps: 20, kappa: 0.08, dt: 0.2}}
    outputs:
      still: {step: soften, path: "{name}-{seed}.png"}

:func:`load_recipe` / :func:`parse_recipe` check YAML syntax, unknown keys (with a "did you mean"),
parameter types and ranges (each stage's pydantic model), unknown stages, references, cycles,
image-versus-frames mismatches, output paths, and the stages' own cross-field checks. Every error
is one line naming the file, line, column, step and parameter::

    recipes/ocean.yaml:14:7: step 'soften': dt=0.4 exceeds the stability bound 0.25 ...

Overrides (``--set steps.art.params.lr=1e-6``) are applied to the parsed data before validation and
are validated like the file; their errors are located at ``--set <path>``, and an error located in
the file that an override may have caused (in the same step or output, or upstream) ends with
``(after --set PATH=VALUE)``. An override's value is YAML, except that ``#00ff00`` is text (YAML
would read a comment) and so is whatever a text-only field is given (``{name}/x.png``).
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import json
import posixpath
import re
import shlex
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from types import SimpleNamespace
from typing import Annotated, Any, Literal, Union, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from . import stages as _stages
from ._checks import check_whole
from .composite import check_labels
from .errors import MinartError, ParamError, RecipeError, ShapeError
from .keys import canonical as _canonical
from .keys import topological_order
from .labels import PerFrame, fill_label, has_fields
from .registry import CheckContext, Stage, get_stage, suggest
from .registry import stages as _all_stages
from .shapes import step_shape

__all__ = [
    "Location",
    "Output",
    "Recipe",
    "RecipeStep",
    "load_recipe",
    "parse_recipe",
    "recipe_schema",
]

TOP_LEVEL_KEYS = ("name", "description", "seed", "device", "size", "steps", "outputs")
STEP_KEYS = ("stage", "input", "inputs", "params")
OUTPUT_KEYS = ("step", "path", "sheet")
DEFAULT_SIZE = (256, 256)
_WRITERS = ("save_image", "encode_video")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
_RECIPE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:[0-9]+)?)$")
_SIZE_RANGE = (8, 16384)
_MAX_NODES = 100_000  # after alias expansion: refuses "billion laughs" documents


# -- YAML with positions -------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 scalars: ``2e-6`` is a float, only true/false are booleans.

    (YAML 1.1 reads ``off``, ``no`` and ``on`` as booleans, which breaks ``substep: off``.)
    """


_BOOL = "tag:yaml.org,2002:bool"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_TIMESTAMP = "tag:yaml.org,2002:timestamp"  # dates stay text: "2026-11-27" in a description
_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in (_BOOL, _INT, _FLOAT, _TIMESTAMP)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
# YAML 1.2 core integers and floats: "010" is ten (1.1: octal 8), "1:30" is text (1.1: base 60,
# 90), "0o17" is octal; no underscores, no "0b" binary
_Loader.add_implicit_resolver(_INT, re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"),
                              list("-+0123456789"))
_Loader.add_implicit_resolver(
    _FLOAT, re.compile(r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
                       r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."))


def _construct_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    text = loader.construct_scalar(node)
    if text.startswith(("0o", "0x")):
        return int(text[2:], 8 if text[1] == "o" else 16)
    return int(text, 10)


_Loader.add_constructor(_INT, _construct_int)
_CORE_TAGS = {f"tag:yaml.org,2002:{t}" for t in ("map", "seq", "str", "int", "float", "bool",
                                                  "null", "merge")}
_Loader.add_implicit_resolver(_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                              list("tTfF"))

Path_ = tuple[str | int, ...]
_PINS = ("sha256",)  # parameters that only check (an input file's checksum), changing no result
_LINE_BREAK = re.compile("\r\n|[\n\r\x85\u2028\u2029]")  # YAML's line breaks, for marks
_HEX_COLOUR = r"#(?:[0-9A-Fa-f]{8}|[0-9A-Fa-f]{6}|[0-9A-Fa-f]{3,4})(?![0-9A-Za-z_])"
_COLOUR_COMMENT = re.compile(rf"[ \t]+({_HEX_COLOUR})")


def _step_of(path: Path_) -> str | None:
    """The step a path lies in (``("steps", "f", ...)`` -> ``"f"``)."""
    return path[1] if len(path) > 1 and path[0] == "steps" and isinstance(path[1], str) else None


def _lookup(data: Any, path: Path_, default: Any = None) -> Any:
    """The value at ``path`` in nested dicts and lists, or ``default``."""
    for part in path:
        if isinstance(data, dict) and part in data:
            data = data[part]
        elif isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data):
            data = data[part]
        else:
            return default
    return data


def _scan_flow(lines: Sequence[str], last: int) -> tuple[tuple[int, int, str] | None,
                                                       list[tuple[int, int, str]]]:
    """A rough scan of ``lines[:last + 1]`` (0-based) for what YAML's errors hide: the first
    unquoted ``#rrggbb`` inside ``[...]``/``{...}`` (YAML reads it, and the rest of its line, as a
    comment) and the brackets still open at the end, each as 1-based ``(line, column, text)``."""
    opened: list[tuple[int, int, str]] = []
    for number, line in enumerate(lines[:last + 1]):
        quote = ""
        for i, ch in enumerate(line):
            before = line[i - 1] if i else " "
            if quote:
                quote = "" if ch == quote else quote
            elif ch in "\"'" and before in " \t[{,:":
                quote = ch
            elif ch in "[{":
                opened.append((number + 1, i + 1, ch))
            elif ch in "]}" and opened:
                opened.pop()
            elif ch == "#" and before in " \t":
                found = re.match(_HEX_COLOUR, line[i:])
                if opened and found:
                    return (number + 1, i + 1, found.group(0)), opened
                break  # a comment to the end of the line
    return None, opened


@dataclass(frozen=True)
class Location:
    """Where something was written: a file (or ``--set <path>``) and a 1-based line and column."""

    file: str
    line: int | None = None
    column: int | None = None

    def __str__(self) -> str:
        return ":".join(str(x) for x in (self.file, self.line, self.column) if x is not None)


class _Doc:
    """Parsed YAML data plus the position of every key and value, by path."""

    def __init__(self, text: str, source: str) -> None:
        self.source = source
        self.keys: dict[Path_, tuple[int, int]] = {}
        self.values: dict[Path_, tuple[int, int]] = {}
        self.texts: dict[Path_, str] = {}  # plain scalars as written ("1e2", not 100.0)
        self.overrides: dict[Path_, str] = {}  # path -> its dotted form, "outputs.a.path"
        self.override_texts: dict[Path_, str] = {}  # path -> "outputs.a.path=x.webm"
        self.swallowed: dict[Path_, tuple[int, int, str]] = {}  # "key: #ff0000" -> null
        self.warnings: list[str] = []  # located, as errors are: "r.yaml:3:5: step 'a': ..."
        self._lines = _LINE_BREAK.split(text)
        self._count = 0
        loader = _Loader(text)
        try:
            node = loader.get_single_node()
            self.data = None if node is None else self._build(node, (), loader)
        except yaml.MarkedYAMLError as exc:
            raise self._syntax_error(exc) from None
        except yaml.YAMLError as exc:
            raise RecipeError(f"invalid YAML: {exc}", file=source) from None
        finally:
            loader.dispose()

    def _syntax_error(self, exc: yaml.MarkedYAMLError) -> RecipeError:
        """The YAML error located where it starts: an unclosed quote or bracket where it opens,
        a colour that ``#`` turned into a comment inside brackets where it is written."""
        mark, opened = exc.problem_mark or exc.context_mark, exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        colour, still_open = _scan_flow(self._lines, mark.line if mark else len(self._lines))
        if colour is not None:
            line, column, written = colour
            return RecipeError(f"invalid YAML: '#' starts a YAML comment, which hides the rest of "
                               f"the line; quote the colour: \"{written}\"", file=self.source,
                               line=line, column=column)
        context = exc.context or ""
        ends = "end of stream" in problem or "<stream end>" in problem
        if opened is not None and context == "while scanning a quoted scalar" and ends:
            problem, mark = "the quote opened here is never closed", opened
        elif context.startswith("while parsing a flow ") and mark and still_open and (
                ends or (opened is not None and mark.line > opened.line)):
            line, column, bracket = still_open[-1]  # ("a flow node" has no opening mark)
            if opened is not None and context.endswith(("sequence", "mapping")):
                line, column = opened.line + 1, opened.column + 1
                bracket = "[" if context.endswith("sequence") else "{"
            where = "the file ends first" if ends else \
                f"{problem} at {mark.line + 1}:{mark.column + 1}"
            return RecipeError(f"invalid YAML: the {bracket!r} opened here is never closed "
                               f"({where})", file=self.source, line=line, column=column)
        elif "'\\t'" in problem:
            problem += "; indent with spaces, not tabs"
        return RecipeError(f"invalid YAML: {problem}", file=self.source,
                           line=mark.line + 1 if mark else None,
                           column=mark.column + 1 if mark else None)

    def _build(self, node: yaml.Node, path: Path_, loader: _Loader,
               active: frozenset[int] = frozenset()) -> Any:
        self.values[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
        self._count += 1
        if self._count > _MAX_NODES or id(node) in active:
            problem = ("an alias refers to itself" if id(node) in active else
                       f"more than {_MAX_NODES} values once aliases are expanded")
            raise RecipeError(f"invalid YAML: {problem}", file=self.source,
                              line=node.start_mark.line + 1, column=node.start_mark.column + 1)
        if node.tag not in _CORE_TAGS:
            raise RecipeError(f"invalid YAML: tag {node.tag!r} is not allowed in recipes (plain "
                              "values, lists and mappings only)", file=self.source,
                              line=node.start_mark.line + 1, column=node.start_mark.column + 1)
        if isinstance(node, (yaml.MappingNode, yaml.SequenceNode)):
            active = active | {id(node)}
        if isinstance(node, yaml.MappingNode):
            out: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                where = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
                if key_node.tag == "tag:yaml.org,2002:merge":
                    raise RecipeError("merge keys ('<<') are not supported; write the keys out",
                                      file=self.source, line=where[0], column=where[1])
                if not isinstance(key_node, yaml.ScalarNode):
                    raise RecipeError("keys must be plain names", file=self.source,
                                      line=where[0], column=where[1])
                key = loader.construct_object(key_node)
                if key is None or isinstance(key, bool):
                    raise RecipeError(f"key {key_node.value!r} reads as "
                                      f"{'null' if key is None else 'true/false'}, not a name; "
                                      "quote it or choose another name", file=self.source,
                                      line=where[0], column=where[1])
                if not isinstance(key, str):
                    key = str(key)
                if key in out:
                    first = self.keys[(*path, key)][0]
                    owner = f"output {path[1]!r}: " if path[:1] == ("outputs",) and len(
                        path) > 1 else ""
                    raise RecipeError(f"{owner}key {key!r} appears twice (first on line {first}); "
                                      "keep one", file=self.source, line=where[0],
                                      column=where[1], step=_step_of(path))
                self.keys[(*path, key)] = where
                out[key] = self._build(value_node, (*path, key), loader, active)
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self._build(item, (*path, i), loader, active)
                    for i, item in enumerate(node.value)]
        if node.style is None:
            self.texts[path] = node.value
            if node.value == "" and node.start_mark.line < len(self._lines):
                # "interior: #ff0000": YAML reads a comment and an empty (null) value
                line = node.start_mark.line
                found = _COLOUR_COMMENT.match(self._lines[line], node.start_mark.column)
                if found:
                    self.swallowed[path] = (line + 1, found.start(1) + 1, found.group(1))
        return loader.construct_object(node, deep=True)

    def check_swallowed(self) -> None:
        """Refuse a value that is empty because YAML read its unquoted ``#rrggbb`` as a comment.

        Raises:
            ParamError: ``interior is empty: '#' starts a YAML comment; quote the colour: ...``.
        """
        for path, (line, column, colour) in self.swallowed.items():
            if _lookup(self.data, path, default=0) is not None:
                continue  # an override set it
            names = [p for p in path if isinstance(p, str)]
            label = names[-1] + "".join(f"[{p}]" for p in path[path.index(names[-1]) + 1:])
            owner = f"output {path[1]!r}: " if path[:1] == ("outputs",) and len(path) > 2 else ""
            raise ParamError(f"{owner}{label} is empty: '#' starts a YAML comment; quote the "
                             f"colour: \"{colour}\"", file=self.source, line=line,
                             column=column, step=_step_of(path), param=names[-1])

    def where(self, path: Path_, *, key: bool = False) -> dict[str, Any]:
        """``file``/``line``/``column`` of the value (or key) at ``path``, or its nearest parent."""
        for cut in range(len(path), -1, -1):
            if path[:cut] in self.overrides:
                return {"file": f"--set {self.overrides[path[:cut]]}"}
        table = self.keys if key else self.values
        probe = path
        while probe:
            if probe in table:
                line, column = table[probe]
                return {"file": self.source, "line": line, "column": column}
            if probe in self.keys:
                line, column = self.keys[probe]
                return {"file": self.source, "line": line, "column": column}
            probe = probe[:-1]
        line, column = self.values.get((), (None, None))
        return {"file": self.source, "line": line, "column": column}

    def note(self, paths: Iterable[Path_]) -> str:
        """``" (after --set outputs.a.path=x.webm)"`` when an override changed the step, output or
        top-level value that one of ``paths`` lies in (the file there shows the old value)."""
        entities = [p[:2] if p[:1] in (("steps",), ("outputs",)) else p[:1] for p in paths]
        hits = [text for where, text in self.override_texts.items()
                if where[-1] not in _PINS and any(
                    where[:len(e)] == e or e[:len(where)] == where for e in entities)]
        return f" (after {', '.join('--set ' + h for h in hits)})" if hits else ""

    def error(self, cls: type[MinartError], message: str, path: Path_, *, key: bool = False,
              step: str | None = None, param: str | None = None,
              also: Sequence[Path_] = ()) -> MinartError:
        """An error located at ``path``; a file location says which overrides changed ``path``'s
        step or output (or those of ``also``)."""
        where = self.where(path, key=key)
        if where["file"] == self.source:
            message += self.note([path, *also])
        return cls(message, step=step, param=param, **where)

    def locate(self, exc: MinartError, path: Path_, *, key: bool = False,
               step: str | None = None, also: Sequence[Path_] = ()) -> MinartError:
        """``exc`` located at ``path`` unless it already names a file (as :meth:`error`)."""
        if exc.file is None:
            where = self.where(path, key=key)
            if where["file"] == self.source:
                exc.message += self.note([path, *also])
            exc.at(**where)
        return exc.at(step=step)


def _dotted(path: Path_) -> str:
    return ".".join(str(p) for p in path)


def _apply_override(doc: _Doc, text: str) -> None:
    """Apply one ``PATH=VALUE`` override to ``doc.data``."""
    if not isinstance(text, str) or "=" not in text or not text.partition("=")[0].strip():
        raise RecipeError(f"--set {text!r}: expected PATH=VALUE, e.g. steps.art.params.lr=1e-6")
    dotted, _, raw = text.partition("=")
    dotted = dotted.strip()
    where = f"--set {dotted}"
    parts: list[str | int] = [p for p in dotted.split(".")]
    if any(p == "" for p in parts):
        raise RecipeError(f"path {dotted!r} has an empty part", file=where)
    if not isinstance(doc.data, dict):
        raise RecipeError("the recipe is not a mapping of keys", file=where)
    value = _override_value(doc.data, parts, raw, dotted)
    node: Any = doc.data
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):
            if not str(part).isdigit() or int(part) >= len(node):
                raise RecipeError(f"{_dotted(parts[:i]) or 'recipe'} has no item {part!r}",
                                  file=where)
            parts[i] = part = int(part)
        elif isinstance(node, dict):
            if part not in node and not last:
                if part == "params" and i >= 2 and parts[i - 2] == "steps":
                    node[part] = {}
                else:
                    parent = _dotted(parts[:i]) or "the recipe"
                    raise RecipeError(f"{parent} has no {part!r}"
                                      f"{suggest(str(part), [str(k) for k in node])}", file=where)
            elif not last and node[part] is None and part == "params":
                node[part] = {}
        else:
            raise RecipeError(f"{_dotted(parts[:i])} is not a mapping, cannot set {part!r} in it",
                              file=where)
        if last:
            node[part] = value
        else:
            node = node[part]
    path = tuple(parts)
    for table in (doc.overrides, doc.override_texts, doc.texts):
        for inside in [k for k in table if k[:len(path)] == path]:
            del table[inside]
    doc.overrides[path] = dotted
    doc.override_texts[path] = f"{dotted}={raw.strip()}"
    if not isinstance(value, (dict, list)) and raw.strip():
        doc.texts[path] = raw.strip()


def _read_yaml(text: str) -> tuple[Any, str]:
    """``(value, "")``, or ``(None, problem)`` when ``text`` is not valid YAML."""
    try:
        return _Loader(text).get_single_data(), ""
    except yaml.YAMLError as exc:
        return None, getattr(exc, "problem", None) or str(exc)


def _wants_text(data: Any, parts: Sequence[str | int]) -> bool:
    """Whether the value at ``parts`` can only be text: the recipe's name and description, an
    output's path, a stage parameter typed ``str`` (``load_image``'s path)."""
    if len(parts) == 1:
        return parts[0] in ("name", "description")
    if len(parts) == 3 and parts[0] == "outputs":
        return parts[2] == "path"
    if len(parts) == 4 and parts[0] == "steps" and parts[2] == "params":
        stage_name = _lookup(data, ("steps", parts[1], "stage"))
        try:
            stage = get_stage(stage_name) if isinstance(stage_name, str) else None
        except RecipeError:
            return False
        field_ = stage.params.model_fields.get(str(parts[3])) if stage else None
        return field_ is not None and field_.annotation is str
    return False


def _override_value(data: Any, parts: Sequence[str | int], raw: str, dotted: str) -> Any:
    """The value of ``--set dotted=raw``: YAML, except that a value starting with ``#`` is text
    (a colour; YAML would read a comment) and so is anything a text-only field is given
    (``outputs.a.path={name}/x.png``, ``description=hello: world``)."""
    text = raw.strip()
    if not text:
        return None
    if text.startswith("#"):
        return text
    value, problem = _read_yaml(raw)
    if _wants_text(data, parts) and (problem or not isinstance(value, str | None)):
        return text
    if not problem:
        return value
    where = f"--set {dotted}"
    quoted = re.sub(rf"(?<![\w\"']){_HEX_COLOUR}", lambda m: json.dumps(m.group(0)), text)
    if quoted != text and not _read_yaml(quoted)[1]:
        raise RecipeError(f"value {text!r} is not valid YAML: '#' starts a YAML comment; quote "
                          f"the colours: --set {shlex.quote(f'{dotted}={quoted}')}", file=where)
    suggestion = shlex.quote(f"{dotted}={json.dumps(text, ensure_ascii=False)}")
    raise RecipeError(f"value {text!r} is not valid YAML ({problem}); quote it: --set "
                      f"{suggestion}", file=where)


# -- the validated recipe ------------------------------------------------------------------------


@dataclass(frozen=True)
class RecipeStep:
    """One validated step.

    Args:
        name: the step's name (``out.<output>`` for steps added by ``outputs:``).
        stage: the registered stage it runs.
        inputs: names of the steps it reads, in order.
        params: the stage's validated parameter model (sizes and checksums resolved).
        location: where it was written.
        param_locations: where each parameter the recipe gives it was written (errors that
            happen while it runs point there).
        kind: what it produces, ``"image"`` or ``"frames"``.
        shape: the shape of its result, ``(C, H, W)`` or ``(T, C, H, W)``, worked out when the
            recipe was checked (:mod:`minart.shapes`); ``None`` where it cannot be known.
    """

    name: str
    stage: str
    inputs: tuple[str, ...]
    params: BaseModel
    location: Location | None = None
    kind: str = "image"
    shape: tuple[int, ...] | None = None
    param_locations: Mapping[str, Location] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class Output:
    """A file the recipe writes: step ``source``'s result, written by step ``step`` to ``path``.

    Entries of ``outputs:`` (``name`` is the output's name, ``step`` is ``out.<name>``) and
    ``save_image`` / ``encode_video`` steps placed among the steps (``name == step``).
    """

    name: str
    step: str
    source: str
    path: str
    kind: Literal["image", "contact_sheet", "video"]
    location: Location | None = None


@dataclass(frozen=True)
class Recipe:
    """A recipe that passed every check; steps are in dependency order.

    ``preview_factor`` is 1 for the recipe as written and ``f`` for :meth:`preview` ``(f)``.
    ``origin`` is the recipe file the text was copied from when ``path`` is a copy (``minart
    reproduce`` renders a copy when the file has been edited since); outputs record it, so the
    new output can be reproduced in turn once the copy is gone. ``warnings`` are the located
    messages of valid parameters that have no effect (``minart check`` and ``run`` print them).
    """

    name: str
    description: str
    seed: int
    device: str
    size: tuple[int, int]
    steps: tuple[RecipeStep, ...]
    outputs: tuple[Output, ...]
    text: str
    path: Path | None = None
    overrides: tuple[str, ...] = ()
    preview_factor: int = 1
    origin: Path | None = None
    warnings: tuple[str, ...] = ()
    _by_name: dict[str, RecipeStep] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._by_name.update({s.name: s for s in self.steps})

    @property
    def recipe_dir(self) -> Path:
        """Folder that relative input paths are resolved against."""
        return self.path.parent if self.path is not None else Path.cwd()

    def step(self, name: str) -> RecipeStep:
        """The step called ``name``.

        Args:
            name: a step name (``out.<output>`` for steps made from ``outputs:``).

        Returns:
            The :class:`RecipeStep`.

        Raises:
            RecipeError: no such step (with a suggestion).

        Example:
            >>> parse_recipe("steps: {a: {stage: fractal}}").step("a").stage
            'fractal'
        """
        if name not in self._by_name:
            raise RecipeError(f"no step named {name!r}{suggest(name, list(self._by_name))}")
        return self._by_name[name]

    def canonical(self) -> dict[str, Any]:
        """JSON-able description with YAML types normalised (``1`` and ``1.0`` agree).

        Parameters go through :func:`minart.keys.canonical` (numbers as floats, tuples as lists);
        each step also records its stage ``version``.

        Returns:
            ``{name, description, seed, device, size, preview_factor, steps, outputs}``.

        Example:
            >>> r = parse_recipe("steps: {a: {stage: fractal, params: {power: 7}}}")
            >>> r.canonical()["steps"][0]["params"]["power"]
            7.0
        """
        return {
            "name": self.name,
            "description": self.description,
            "seed": self.seed,
            "device": self.device,
            "size": list(self.size),
            "preview_factor": self.preview_factor,
            "steps": [{"name": s.name, "stage": s.stage, "version": get_stage(s.stage).version,
                       "inputs": list(s.inputs), "params": _canonical(s.params)}
                      for s in self.steps],
            "outputs": [{"name": o.name, "step": o.step, "source": o.source, "path": o.path,
                         "kind": o.kind} for o in self.outputs],
        }

    def _reshaped(self, steps: Sequence[RecipeStep], size: tuple[int, int],
                  what: str) -> list[RecipeStep]:
        """``steps`` with their shapes worked out again (after their parameters changed).

        Raises:
            MinartError: a step's inputs no longer fit; the message starts with ``what``.
        """
        shapes: dict[str, tuple[int, ...] | None] = {}
        kinds = {s.name: s.kind for s in steps}
        recipe_dir = self.path.parent if self.path is not None else Path.cwd()
        out = []
        for s in steps:
            try:
                shapes[s.name] = step_shape(get_stage(s.stage), s.params, inputs=s.inputs,
                                            shapes=shapes, kinds=kinds, recipe_dir=recipe_dir,
                                            size=size)
            except MinartError as exc:
                exc.message = f"{what}: {exc.message}; render without --preview or change the step"
                where = s.location or Location(str(self.path or self.name))
                raise exc.at(step=s.name, file=where.file, line=where.line,
                             column=where.column) from None
            out.append(replace(s, shape=shapes[s.name]))
        return out

    def preview(self, factor: int = 4) -> Recipe:
        """A quick variant ``factor`` times smaller in each dimension that looks like the render.

        The size and every explicit width/height are divided by ``factor`` (at least 8 px),
        Perona-Malik ``steps`` are divided by ``factor**2`` (diffusion covers about
        ``sqrt(steps)`` pixels), ``minimize`` with ``reduction: sum`` multiplies ``lr`` by
        ``factor**2`` (a summed loss has ``factor**2`` fewer terms) and, with ``loss: seed``,
        runs its schedule ``factor`` times faster with the same frames, grid spacing is divided by
        ``factor`` and ``load_image`` downscales its image by ``factor``. The name gets
        ``-preview`` appended, so ``{name}`` paths do not overwrite full renders; output paths
        without ``{name}`` get ``-preview`` before their extension.

        Args:
            factor: shrink factor per dimension (whole, >= 1; 1 returns the recipe itself).

        Returns:
            A new :class:`Recipe` with ``preview_factor`` multiplied by ``factor``.

        Raises:
            ParamError: ``factor`` below 1.

        Example:
            >>> r = parse_recipe("size: [256, 128]\\nsteps: {a: {stage: fractal}}")
            >>> p = r.preview(4)
            >>> p.size, p.step("a").params.width, p.name
            ((64, 32), 64, 'recipe-preview')
        """
        check_whole("factor", factor, ge=1)
        if factor == 1:
            return self
        steps = []
        for s in self.steps:
            stage = get_stage(s.stage)
            params = s.params
            if stage.preview is not None:
                update = stage.preview(params, factor)
                try:
                    params = type(params).model_validate({**params.model_dump(), **update},
                                                         strict=False)
                except ValidationError as exc:
                    first = exc.errors()[0]
                    message, name = _pydantic_message(first, stage)
                    name = name or None
                    what = (f"would set {name}={update.get(name)!r}, but " if name in update
                            else "fails: ")
                    where = s.location or Location(str(self.path or self.name))
                    raise ParamError(
                        f"the preview ({factor}x smaller) {what}{message}; render "
                        f"without --preview or change {name or 'the step'}", step=s.name,
                        param=name, file=where.file, line=where.line,
                        column=where.column) from None
            steps.append(replace(s, params=params))
        size = (max(_SIZE_RANGE[0], self.size[0] // factor),  # floor, as _shrink and downscale
                max(_SIZE_RANGE[0], self.size[1] // factor))
        steps = self._reshaped(steps, size, f"the preview ({factor}x smaller)")
        return replace(self, name=f"{self.name}-preview", size=size, steps=tuple(steps),
                       preview_factor=self.preview_factor * factor, _by_name={})


# -- validation ----------------------------------------------------------------------------------


def _show(value: Any) -> str:
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, (dict, list, tuple)):
        try:
            return json.dumps(value)
        except (TypeError, ValueError):
            return repr(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    return repr(value)


def _clean_errors(errors: list[Any]) -> list[dict[str, Any]]:
    """Pydantic errors with union-member names dropped from ``loc``, one per place, the most
    telling first (a value out of range says more than "not a number" for another union member).
    """
    cleaned: dict[tuple, dict[str, Any]] = {}
    for err in errors:
        loc = tuple(p for i, p in enumerate(err["loc"]) if i == 0 or isinstance(p, int))
        entry = {**err, "loc": loc}
        vague = err["type"].endswith("_type") or err["type"].endswith("_parsing")
        entry["_rank"] = (vague, -len(err["loc"]))
        field_ = loc[:1]
        if field_ not in cleaned or entry["_rank"] < cleaned[field_]["_rank"]:
            cleaned[field_] = entry
    return sorted(cleaned.values(), key=lambda e: next(i for i, x in enumerate(errors)
                                                   if tuple(x["loc"])[:1] == e["loc"][:1]))


def _limit(stage: Stage, name: str, which: str) -> Any:
    """The ``le``/``ge``/... bound of parameter ``name`` of ``stage``, or ``None``."""
    field = stage.params.model_fields.get(name)
    for rule in (field.metadata if field is not None else ()):
        if hasattr(rule, which):
            return getattr(rule, which)
    return None


def _pydantic_message(err: Mapping[str, Any], stage: Stage,
                      written: str | None = None) -> tuple[str, str]:
    """One artist-facing line for a pydantic error, and the parameter name (``written``: the
    value as the recipe wrote it, ``1e2`` for 100.0)."""
    loc = err["loc"]
    name = str(loc[0]) if loc else ""
    shown = name + "".join(f"[{p}]" for p in loc[1:])
    value = err.get("input")
    ctx = err.get("ctx") or {}
    kind = err["type"]
    if kind == "extra_forbidden":
        fields = list(stage.params.model_fields)
        return (f"unknown parameter {name!r} for stage {stage.name!r}{suggest(name, fields)}",
                name)
    if kind == "missing":
        if len(loc) > 1:
            return f"{name} needs more items", name
        info = stage.params.model_fields[name].description or ""
        return f"missing parameter {name!r} ({info.rstrip('.')})" if info else \
            f"missing parameter {name!r}", name
    bounds = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<",
              "less_than_equal": "<="}
    if kind in bounds:
        limit = next(iter(ctx.values()))
        if isinstance(limit, float) and limit.is_integer():
            limit = int(limit)
        return f"{shown}={_show(value)} must be {bounds[kind]} {_show(limit)}", name
    if kind == "literal_error":
        expected = str(ctx.get("expected", ""))  # "'inverse_power' or 'multibrot'"
        close = suggest(value, re.findall(r"'([^']*)'", expected)) if isinstance(value, str) else ""
        return f"{shown}={_show(value)} is not one of {expected}{close}", name
    if kind == "finite_number":
        return f"{shown}={_show(value)} must be a finite number", name
    if kind.startswith("int_") and isinstance(value, float) and value.is_integer():  # 1e30, 5.0
        top = _limit(stage, name, "le")
        if top is not None and value > top:
            return f"{shown}={_show(value)} is too large; use at most {top}", name
        as_written = written or _show(value)
        return (f"{shown}={as_written} must be written as a whole number "
                f"({int(value)}, not {as_written})"), name
    if kind.startswith("int_"):
        return f"{shown}={_show(value)} must be a whole number", name
    if kind.startswith("float_"):
        return f"{shown}={_show(value)} must be a number", name
    if kind.startswith("bool_"):
        return f"{shown}={_show(value)} must be true or false", name
    if kind.startswith("string_too_short"):
        return f"{shown}={_show(value)} must not be empty", name
    if kind.startswith("string_pattern"):
        field = stage.params.model_fields.get(name)
        hint = field.description.split(";")[0].rstrip(".") if field and field.description else ""
        what = f" ({hint[:1].lower()}{hint[1:]})" if hint else ""
        return f"{shown}={_show(value)} does not have the expected form{what}", name
    if kind.startswith("string_"):
        return f"{shown}={_show(value)} must be text", name
    if kind in ("tuple_type", "list_type"):
        return f"{shown}={_show(value)} must be a list like [a, b]", name
    if kind.startswith("too_long") or kind.startswith("too_short"):
        count = ctx.get("actual_length")
        most, least = ctx.get("max_length"), ctx.get("min_length")
        advice = (f"; give at most {most}" if most is not None else
                  f"; give at least {least}" if least is not None else "")
        items = f"has {count} item{'s' if count != 1 else ''}" if count is not None else \
            "has the wrong number of items"
        return f"{shown}={_show(value)} {items}{advice}", name
    msg = str(err.get("msg", "is invalid"))
    return f"{shown}={_show(value)}: {msg[:1].lower()}{msg[1:]}", name


def _check_keys(doc: _Doc, data: Mapping[str, Any], allowed: Sequence[str], path: Path_, what: str,
                *, step: str | None = None) -> None:
    for key in data:
        if key not in allowed:
            raise doc.error(RecipeError, f"unknown key {key!r} in {what}{suggest(str(key), allowed)}"
                            f" (allowed: {', '.join(allowed)})", (*path, key), key=True, step=step)


def _param_spot(params_path: Path_, raw: Mapping[str, Any], param: str | None, *,
                or_else: Path_ | None = None) -> Path_:
    """Where an error about ``param`` points: the parameter when the step writes it, else
    ``or_else`` (default: the step's ``params``)."""
    if param and param in raw:
        return (*params_path, param)
    return params_path if or_else is None else or_else


def _misspelled_first(errors: list[dict[str, Any]], stage: Stage) -> list[dict[str, Any]]:
    """``errors`` with an unknown parameter that is a misspelling of a missing required one
    (``kapa`` for ``kappa``) first, and that "missing" error dropped: the spelling is the fix."""
    fields = list(stage.params.model_fields)
    missing = {str(e["loc"][0]): e for e in errors if e["type"] == "missing" and len(e["loc"]) == 1}
    typos, explained = [], []
    for err in errors:
        if err["type"] == "extra_forbidden" and err["loc"]:
            close = difflib.get_close_matches(str(err["loc"][0]), fields, n=1, cutoff=0.6)
            if close and close[0] in missing:  # (the closeness of registry.suggest)
                typos.append(err)
                explained.append(missing[close[0]])
    if not typos:
        return errors
    return typos + [e for e in errors if not any(e is x for x in typos + explained)]


def _validate_params(doc: _Doc, stage: Stage, raw: Any, path: Path_, step: str | None,
                     extra_check: CheckContext, *, upstream: Sequence[Path_] = ()) -> BaseModel:
    """``raw`` validated by the stage's model and its own check (which sees the inputs' kinds:
    an override ``upstream`` can cause its errors, and its warnings go to ``extra_check``)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise doc.error(RecipeError, f"params must be a mapping of parameter: value, got "
                        f"{_show(raw)}", path, step=step)
    try:
        params = stage.params.model_validate(raw)
    except ValidationError as exc:
        errors = _misspelled_first(_clean_errors(exc.errors()), stage)
        first = errors[0]
        message, name = _pydantic_message(first, stage, doc.texts.get((*path, *first["loc"])))
        missing = [str(e["loc"][0]) for e in errors if e["type"] == "missing" and len(e["loc"]) == 1]
        rest = errors[1:]
        if first["type"] == "missing" and len(first["loc"]) == 1 and len(missing) > 1:
            named = ", ".join(repr(m) for m in missing[:-1]) + f" and {missing[-1]!r}"
            message = (f"missing parameters {named}; 'minart describe {stage.name}' explains "
                       "them")
            rest = [e for e in errors if e not in errors[:1] and not (
                e["type"] == "missing" and len(e["loc"]) == 1)]
        if rest:
            others = list(dict.fromkeys(str(e["loc"][0]) if e["loc"] else "?" for e in rest))
            message += f" (and {len(rest)} more: {', '.join(others)})"
        where = (*path, *first["loc"])
        if first["type"] == "missing":
            where = (*path, first["loc"][0]) if len(first["loc"]) > 1 else path
        key = first["type"] == "extra_forbidden" or (
            first["type"] == "missing" and len(first["loc"]) == 1)
        if first["type"] == "missing" and path not in doc.keys:
            where = path[:-1]
        raise doc.error(ParamError, message, where, key=key, step=step, param=name) from None
    if stage.check is not None:
        try:
            update = stage.check(params, extra_check)
        except MinartError as exc:
            raise doc.locate(exc, _param_spot(path, raw, exc.param), step=step,
                             also=upstream) from None
        if update:
            params = params.model_copy(update=dict(update))
    return params


def name_from_stem(stem: str) -> str:
    """A recipe name (for ``{name}`` in file names) made from a file name's stem.

    Accents are dropped, every run of other characters becomes one ``-``; a stem with nothing
    left gets ``recipe-`` and 8 hex digits of its SHA-1, so two such files still differ.

    Example:
        >>> name_from_stem("my recipe (v2)"), name_from_stem("Marée"), name_from_stem("ocean")
        ('my-recipe-v2', 'Maree', 'ocean')
        >>> name_from_stem("海")
        'recipe-b188c5e3'
    """
    ascii_only = unicodedata.normalize("NFKD", stem).encode("ascii", "ignore").decode()
    name = re.sub(r"\.{2,}", ".", re.sub(r"[^A-Za-z0-9_.-]+", "-", ascii_only)).strip("-_.")
    if not name:
        return f"recipe-{hashlib.sha1(stem.encode()).hexdigest()[:8]}"
    return name


def _validate_top(doc: _Doc, data: dict[str, Any], default_name: str) -> dict[str, Any]:
    _check_keys(doc, data, TOP_LEVEL_KEYS, (), "the recipe")
    name = data.get("name", default_name)
    if isinstance(name, str) and ".." in name:
        raise doc.error(RecipeError, f"name={_show(name)} must not contain '..' (it is used in "
                        "file names, where '..' means the folder above)", ("name",), param="name")
    written = doc.texts.get(("name",), "")
    if isinstance(name, int | float) and not isinstance(name, bool) and _RECIPE_NAME.match(
            written):
        raise doc.error(RecipeError, f"name={written} is a number, but a name is text; quote it: "
                        f"name: \"{written}\"", ("name",), param="name")
    if not isinstance(name, str) or not _RECIPE_NAME.match(name):
        raise doc.error(RecipeError, f"name={_show(name)} must be ASCII letters, digits, '_', '-' "
                        "or '.', starting with a letter or digit (it is used in file names)",
                        ("name",), param="name")
    description = data.get("description", "")
    if description is None:
        description = ""
    if not isinstance(description, str):
        raise doc.error(RecipeError, f"description={_show(description)} must be text; put it in "
                        "quotes", ("description",))
    seed = data.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise doc.error(ParamError, f"seed={_show(seed)} must be a whole number from 0 to 2^63-1",
                        ("seed",), param="seed")
    device = data.get("device", "auto")
    if not isinstance(device, str) or not _DEVICE.match(device):
        raise doc.error(ParamError, f"device={_show(device)} must be auto, cpu, mps, cuda or cuda:N",
                        ("device",), param="device")
    size = data.get("size", list(DEFAULT_SIZE))
    if isinstance(size, dict):
        _check_keys(doc, size, ("width", "height"), ("size",), "size")
        if set(size) != {"width", "height"}:
            raise doc.error(ParamError, "size needs both width and height", ("size",),
                            param="size")
        size = [size["width"], size["height"]]
        path_of = [("size", "width"), ("size", "height")]
    else:
        path_of = [("size", 0), ("size", 1)]
    if not isinstance(size, list) or len(size) != 2:
        raise doc.error(ParamError, f"size={_show(size)} must be [width, height] or "
                        "{width: .., height: ..}", ("size",), param="size")
    for value, where, label in zip(size, path_of, ("width", "height"), strict=True):
        if isinstance(value, bool) or not isinstance(value, int) or not (
                _SIZE_RANGE[0] <= value <= _SIZE_RANGE[1]):
            raise doc.error(ParamError, f"size {label}={_show(value)} must be a whole number "
                            f"from {_SIZE_RANGE[0]} to {_SIZE_RANGE[1]}", where, param="size")
    steps = data.get("steps")
    if isinstance(steps, list):
        raise doc.error(RecipeError, "steps must be a mapping of step name to {stage, input, "
                        "params}, not a list: write 'name:' instead of '- ' before each step",
                        ("steps",))
    if not isinstance(steps, dict) or not steps:
        raise doc.error(RecipeError, "the recipe needs 'steps:', a mapping of step name to "
                        "{stage, input, params}", ("steps",) if "steps" in data else (),
                        key="steps" in data)
    outputs = data.get("outputs")
    outputs = {} if outputs is None else outputs  # "outputs:" left empty: none
    if not isinstance(outputs, dict):
        raise doc.error(RecipeError, "outputs must be a mapping of output name to "
                        "{step, path, ...}", ("outputs",))
    return {"name": name, "description": description, "seed": seed, "device": device,
            "size": (size[0], size[1]), "steps": steps, "outputs": outputs}


@dataclass
class _Draft:
    name: str
    stage: Stage
    inputs: list[str]
    raw_params: Any
    params_path: Path_
    path: Path_
    input_paths: list[Path_]
    output: str | None = None


def _read_step(doc: _Doc, name: Any, body: Any) -> _Draft:
    path: Path_ = ("steps", name)
    if not isinstance(name, str) or not _NAME.match(name):
        raise doc.error(RecipeError, f"step name {name!r} must start with an ASCII letter or '_' "
                        "and use only ASCII letters, digits, '_' and '-'", path, key=True)
    if not isinstance(body, dict):
        raise doc.error(RecipeError, "a step is a mapping with 'stage' (and 'input', 'params')",
                        path, step=name)
    _check_keys(doc, body, STEP_KEYS, path, f"step {name!r}", step=None)
    if "stage" not in body:
        raise doc.error(RecipeError, "missing 'stage' (run 'minart stages' for the list)", path,
                        key=True, step=name)
    try:
        stage = get_stage(body["stage"]) if isinstance(body["stage"], str) else None
    except RecipeError as exc:
        raise doc.locate(exc, (*path, "stage"), step=name) from None
    if stage is None:
        raise doc.error(RecipeError, f"stage={_show(body['stage'])} must be a stage name",
                        (*path, "stage"), step=name)
    if "input" in body and "inputs" in body:
        raise doc.error(RecipeError, "give either 'input' or 'inputs', not both",
                        (*path, "inputs"), key=True, step=name)
    if isinstance(body.get("input"), list) and all(isinstance(i, str) for i in body["input"]):
        raise doc.error(RecipeError, f"input takes one step name; for several, use inputs: "
                        f"[{', '.join(body['input'])}]", (*path, "input"), key=True, step=name)
    if "input" in body:
        inputs, input_paths = [body["input"]], [(*path, "input")]
    else:
        inputs = body.get("inputs") or []
        if not isinstance(inputs, list):
            inputs = [inputs]
        input_paths = [(*path, "inputs", i) for i in range(len(inputs))]
    for value, where in zip(inputs, input_paths, strict=True):
        if not isinstance(value, str):
            raise doc.error(RecipeError, f"input {_show(value)} must be a step name", where,
                            step=name)
    if not stage.accepts(len(inputs)):
        if stage.generator:
            message = f"stage {stage.name!r} makes its own image and takes no input"
        else:
            names = ", ".join(stage.inputs)
            message = (f"stage {stage.name!r} takes {stage.input_count()} input(s) ({names}), "
                       f"got {len(inputs)}")
        raise doc.error(RecipeError, message, input_paths[0] if inputs else path, key=True,
                        step=name)
    return _Draft(name=name, stage=stage, inputs=inputs, raw_params=body.get("params"),
                  params_path=(*path, "params"), path=path, input_paths=input_paths)


def _output_drafts(doc: _Doc, name: Any, body: Any) -> tuple[list[_Draft], dict[str, Any]]:
    path: Path_ = ("outputs", name)
    label = f"output {name!r}"
    if not isinstance(name, str) or not _NAME.match(name):
        raise doc.error(RecipeError, f"output name {name!r} must start with an ASCII letter or "
                        "'_' and use only ASCII letters, digits, '_' and '-'", path, key=True)
    if not isinstance(body, dict):
        raise doc.error(RecipeError, f"{label}: an output is a mapping with 'step' and 'path'",
                        path)
    for required in ("step", "path"):
        if required not in body:
            raise doc.error(RecipeError, f"{label}: missing {required!r}", path, key=True)
    source, template = body["step"], body["path"]
    if not isinstance(source, str):
        raise doc.error(RecipeError, f"{label}: step must be a step name", (*path, "step"))
    if not isinstance(template, str):
        raise doc.error(RecipeError, f"{label}: path must be text", (*path, "path"))
    try:
        _stages.check_output_template(template)
    except RecipeError as exc:
        raise doc.error(RecipeError, f"{label}: {exc.message}", (*path, "path"),
                        param="path") from None
    suffix = PurePosixPath(template).suffix.lower()
    image_fields = [f for f in _stages.SaveImageParams.model_fields if f != "path"]
    video_fields = [f for f in _stages.EncodeVideoParams.model_fields if f != "path"]
    if suffix in _stages.VIDEO_SUFFIXES:
        writer, kind, options = "encode_video", "video", video_fields
    elif suffix in _stages.IMAGE_SUFFIXES:
        writer, kind, options = "save_image", "image", image_fields
    else:
        known = ", ".join(_stages.IMAGE_SUFFIXES + _stages.VIDEO_SUFFIXES)
        raise doc.error(RecipeError, f"{label}: path {template!r} needs a known extension "
                        f"({known})", (*path, "path"), param="path")
    allowed = [*OUTPUT_KEYS, *options] if kind == "image" else ["step", "path", *options]
    for key in body:
        if key in allowed:
            continue
        if key in image_fields + video_fields + ["sheet"]:
            raise doc.error(RecipeError, f"{label}: {key!r} does not apply to a {suffix} output",
                            (*path, key), key=True, param=str(key))
        raise doc.error(RecipeError, f"{label}: unknown key {key!r}"
                        f"{suggest(str(key), allowed)} (allowed: {', '.join(allowed)})",
                        (*path, key), key=True)
    step_name = f"out.{name}"
    drafts: list[_Draft] = []
    feed = source
    if "sheet" in body and body["sheet"] is not False:
        sheet = body["sheet"]
        if not (sheet is True or sheet is None or isinstance(sheet, dict)):
            raise doc.error(RecipeError, f"{label}: sheet={_show(sheet)} must be true or a mapping "
                            "of contact-sheet options (frames, columns, ...)", (*path, "sheet"))
        sheet_params = {} if sheet is True or sheet is None else sheet
        kind = "contact_sheet"
        drafts.append(_Draft(name=f"{step_name}.sheet", stage=get_stage("contact_sheet"),
                             inputs=[source], raw_params=sheet_params,
                             params_path=(*path, "sheet"), path=path,
                             input_paths=[(*path, "step")], output=name))
        feed = f"{step_name}.sheet"
    writer_params = {k: v for k, v in body.items() if k not in ("step", "sheet")}
    drafts.append(_Draft(name=step_name, stage=get_stage(writer), inputs=[feed],
                         raw_params=writer_params, params_path=path, path=path,
                         input_paths=[(*path, "step")], output=name))
    info = {"name": name, "step": step_name, "source": source, "path": template, "kind": kind}
    return drafts, info


def _filled_labels(doc: _Doc, draft: _Draft, raw: Any, done: Mapping[str, tuple[Stage, BaseModel]],
                   feeding: set[str], steps: Sequence[str], recipe: Mapping[str, Any], *,
                   upstream: Sequence[Path_]) -> tuple[Any, list[str]]:
    """``raw`` params with the ``{step.param}`` fields of its ``labels`` (a list of captions, or
    one text: a contact sheet's) filled in from the steps before it (``done``: stage and params
    of each, ``feeding``: those this step is made from, ``steps``: the recipe's) and the
    ``{name}``/``{seed}`` fields from ``recipe``, and a note per label that became several
    captions, for a count that does not fit."""
    labels = raw.get("labels") if isinstance(raw, dict) else None
    field = draft.stage.params.model_fields.get("labels")
    if isinstance(labels, str) and (field is None or str not in get_args(field.annotation)):
        return raw, []  # one text where a list is wanted (grid): validation says so
    items = [labels] if isinstance(labels, str) else labels
    if not isinstance(items, list) or not all(isinstance(x, str) for x in items) or not any(
            has_fields(x) for x in items):
        return raw, []  # nothing to fill; validation reports a malformed list as written

    def lookup(step: str | None, param: str) -> Any:
        if step is None:
            if param not in recipe:
                known = " or ".join(f"{{{k}}}" for k in recipe)
                raise ParamError(f"{{{param}}} is not a field" + (
                    suggest(param, list(recipe)) or f": write {{step.param}} for a step's "
                    f"parameter, or {known} for the recipe's"), param="labels")
            return recipe[param]
        if step not in steps:
            others = [s for s in steps if s != draft.name]
            hint = suggest(step, others) or f"; its steps are {', '.join(others[:8])}"
            raise ParamError(f"{{{step}.{param}}}: {step!r} is not a step of this recipe{hint}",
                             param="labels")
        if step not in feeding:
            raise ParamError(f"{{{step}.{param}}}: step {step!r} does not feed this step; a "
                             "caption shows a parameter of a step it is made from",
                             param="labels")
        stage, params = done[step]
        names = list(type(params).model_fields)
        if param not in names:
            raise ParamError(f"{{{step}.{param}}}: stage {stage.name!r} of step {step!r} has no "
                             f"parameter {param!r}{suggest(param, names)} ('minart describe "
                             f"{stage.name}' lists them)", param="labels")
        frames = stage.per_frame(params) if stage.per_frame is not None else []
        if frames and param in frames[0]:
            if step not in draft.inputs:  # other steps between may reorder or drop its frames
                raise ParamError(f"{{{step}.{param}}}: {param} changes from frame to frame of "
                                 f"step {step!r}, whose frames reach this step through others "
                                 "that may reorder or drop them; caption the frames of an input "
                                 f"({', '.join(draft.inputs)})", param="labels")
            return PerFrame(tuple(frame[param] for frame in frames))
        return getattr(params, param)

    filled: list[str] = []
    notes: list[str] = []
    for i, label in enumerate(items):
        name, where = ("labels", ()) if isinstance(labels, str) else (f"labels[{i}]", (i,))
        try:
            try:
                captions = fill_label(label, lookup)
            except MinartError as exc:
                exc.message = f"{name}: {exc.message}"
                raise
            check_labels(captions, names=[f"{name} gives {c!r}, which" for c in captions])
        except MinartError as exc:
            if draft.output:
                exc.message = f"output {draft.output!r}: {exc.message}"
            raise doc.locate(exc, (*draft.params_path, "labels", *where),
                             step=None if draft.output else draft.name, also=upstream) from None
        if len(captions) != 1:
            notes.append(f"{name} makes {len(captions)}, one per frame of its clip")
        filled.extend(captions)
    return {**raw, "labels": filled}, notes


def _build(doc: _Doc, *, path: Path | None, text: str, overrides: tuple[str, ...],
           default_name: str) -> Recipe:
    if doc.data is None:
        raise RecipeError("the recipe is empty; it needs at least 'steps:'", file=doc.source)
    if not isinstance(doc.data, dict):
        raise doc.error(RecipeError, "a recipe is a mapping of keys (name, seed, size, steps, "
                        "outputs), not a list or a single value", ())
    top = _validate_top(doc, doc.data, default_name)
    drafts = [_read_step(doc, name, body) for name, body in top["steps"].items()]
    outputs_info = []
    for name, body in top["outputs"].items():
        extra, info = _output_drafts(doc, name, body)
        drafts.extend(extra)
        outputs_info.append(info)
    by_name = {d.name: d for d in drafts}
    user_steps = [d.name for d in drafts if d.output is None]
    for draft in drafts:
        for ref, where in zip(draft.inputs, draft.input_paths, strict=True):
            generated = ref in by_name and by_name[ref].output is not None
            if ref not in by_name or (generated and by_name[ref].output != draft.output):
                label = f"output {draft.output!r}: step" if draft.output else "input"
                hint = suggest(ref, user_steps) or "; its steps are " + ", ".join(
                    user_steps[:8]) + (", ..." if len(user_steps) > 8 else "")
                raise doc.error(RecipeError, f"{label} {ref!r} is not a step of this recipe"
                                f"{hint}", where,
                                step=None if draft.output else draft.name)
    try:
        order = topological_order([SimpleNamespace(name=d.name, inputs=d.inputs) for d in drafts])
    except RecipeError as exc:
        draft = by_name.get(exc.step or "")
        where = draft.input_paths[0] if draft and draft.input_paths else ("steps",)
        raise doc.locate(exc, where) from None
    kinds: dict[str, str] = {}
    shapes: dict[str, tuple[int, ...] | None] = {}
    steps: list[RecipeStep] = []
    size = top["size"]
    recipe_dir = path.parent if path is not None else Path.cwd()
    before: dict[str, set[str]] = {}  # the steps each step's result depends on
    done: dict[str, tuple[Stage, BaseModel]] = {}  # stage and params of the steps built so far
    for name in order:
        draft = by_name[name]
        before[name] = set(draft.inputs).union(*(before[i] for i in draft.inputs))
        upstream = [("outputs", n.split(".")[1]) if by_name[n].output else ("steps", n)
                    for n in sorted(before[name])]  # where an override can change this step's input
        input_kinds = [kinds[i] for i in draft.inputs]
        label = f"output {draft.output!r}" if draft.output else None
        for ref, kind, where in zip(draft.inputs, input_kinds, draft.input_paths, strict=True):
            if kind not in draft.stage.consumes:
                need = " or ".join("a clip of frames" if k == "frames" else "an image"
                                   for k in draft.stage.consumes)
                got = "a clip of frames" if kind == "frames" else "an image"
                source = ref if not ref.startswith("out.") else ref.split(".")[1]
                if draft.output and draft.stage.name == "contact_sheet":
                    msg = (f"{label}: step {source!r} produces an image; 'sheet' makes a contact "
                           "sheet of a clip, so drop it")
                elif draft.output and draft.stage.name == "save_image":
                    msg = (f"{label}: step {source!r} produces {got}; write it to a video path "
                           "(.webm, .mp4, .gif) or add 'sheet: true' for a contact sheet")
                elif draft.output:
                    msg = f"{label}: step {source!r} produces {got}, but {_kind_need(draft)}"
                else:
                    msg = (f"input {ref!r} produces {got} but stage {draft.stage.name!r} "
                           f"needs {need}{_bridge_hint(kind, draft.stage.consumes)}")
                chosen = (*draft.path, "sheet" if draft.stage.name == "contact_sheet" else "path")
                if draft.output and chosen in doc.overrides and where not in doc.overrides:
                    where = chosen  # the output's kind comes from its overridden path or sheet
                raise doc.error(RecipeError, msg, where, step=None if draft.output else draft.name,
                                also=upstream)
        kinds[name] = draft.stage.output_kind(input_kinds)
        ctx = CheckContext(recipe_dir=recipe_dir, size=size, input_kinds=tuple(input_kinds))
        raw_params, label_notes = _filled_labels(
            doc, draft, draft.raw_params, done, before[name], user_steps,
            {"name": top["name"], "seed": top["seed"]}, upstream=upstream)
        try:
            params = _validate_params(doc, draft.stage, raw_params, draft.params_path,
                                      draft.name if not draft.output else None, ctx,
                                      upstream=upstream)
        except MinartError as exc:
            if draft.output and not exc.message.startswith("output "):
                exc.message = f"{label}: {exc.message}"
            raise
        raw = draft.raw_params if isinstance(draft.raw_params, dict) else {}
        try:
            shapes[name] = step_shape(draft.stage, params, inputs=draft.inputs, shapes=shapes,
                                      kinds=kinds, recipe_dir=recipe_dir, size=size,
                                      warnings=ctx.warnings)
        except MinartError as exc:
            if exc.param == "labels" and label_notes:
                exc.message += f" ({'; '.join(label_notes)})"
            spot = _param_spot(draft.params_path, raw, exc.param, or_else=draft.path)
            if spot == draft.path and isinstance(exc, ShapeError) and draft.input_paths:
                spot = draft.input_paths[0]  # inputs that do not fit
            if draft.output:
                exc.message = f"{label}: {exc.message}"
            raise doc.locate(exc, spot, step=None if draft.output else name,
                             also=[("size",), *upstream]) from None
        for message, param in ctx.warnings:  # valid, but probably not what the artist meant
            spot = _param_spot(draft.params_path, raw, param, or_else=draft.path)
            if param and spot in doc.overrides:  # the parameter came from the command line
                drop = f"drop --set {doc.overrides[spot]}"
                message = message.replace(f"; remove {param}", f"; {drop}").replace(
                    f"leave {param} out", drop)
            doc.warnings.append(str(doc.error(
                ParamError, f"{label}: {message}" if draft.output else message, spot,
                step=None if draft.output else name, param=param)))
        where = doc.where(draft.path)
        at = {k: Location(**doc.where((*draft.params_path, k))) for k in raw if isinstance(k, str)}
        done[name] = (draft.stage, params)
        steps.append(RecipeStep(name=name, stage=draft.stage.name, inputs=tuple(draft.inputs),
                                params=params, location=Location(**where), kind=kinds[name],
                                shape=shapes[name], param_locations=at))
    # Writer steps placed among the steps are outputs too: every file the recipe writes is listed.
    written_by_steps = [
        Output(name=s.name, step=s.name, source=s.inputs[0], path=s.params.path,
               kind="video" if s.stage == "encode_video" else "image", location=s.location)
        for s in steps if s.stage in _WRITERS and not s.name.startswith("out.")]
    outputs = tuple(written_by_steps) + tuple(
        Output(**info, location=Location(**doc.where(("outputs", info["name"]))))
        for info in outputs_info)
    _check_distinct_files(doc, outputs, name=top["name"], seed=top["seed"])
    return Recipe(name=top["name"], description=top["description"], seed=top["seed"],
                  device=top["device"], size=size, steps=tuple(steps), outputs=outputs,
                  text=text, path=path, overrides=overrides, warnings=tuple(doc.warnings))


def _check_distinct_files(doc: _Doc, outputs: Sequence[Output], *, name: str, seed: int) -> None:
    """Refuse two outputs that would write the same file (on any date)."""
    seen: dict[str, Output] = {}
    for out in outputs:
        expanded = posixpath.normpath(out.path.format(name=name, seed=seed, date="{date}",
                                                      step=out.source))
        other = seen.get(expanded)
        if other is None:
            seen[expanded] = out
            continue
        is_step = out.name == out.step
        what = f"step {other.name!r}" if other.name == other.step else f"output {other.name!r}"
        message = f"path {out.path!r} writes the same file as {what}"
        also = [("name",), ("seed",), ("steps" if other.name == other.step else "outputs",
                                         other.name)]
        if is_step:
            raise doc.error(RecipeError, message, ("steps", out.name, "params", "path"),
                            step=out.name, param="path", also=also)
        raise doc.error(RecipeError, f"output {out.name!r}: {message}",
                        ("outputs", out.name, "path"), param="path", also=also)


def _bridge_hint(got: str, needs: Sequence[str]) -> str:
    """``"; a step of stage minimize ... in between turns one into the other"``, from the registry:
    the stages that take ``got`` and give one of ``needs`` (writers left out)."""
    names = []
    for stage in _all_stages():
        if got not in stage.consumes or stage.name in _WRITERS:
            continue
        with contextlib.suppress(MinartError, ValueError, TypeError):
            if stage.output_kind([got] * max(1, len(stage.inputs))) in needs:
                names.append(stage.name)
    if not names:
        return ""
    listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + f" or {names[-1]}"
    return f"; put a step of stage {listed} in between"


def _kind_need(draft: _Draft) -> str:
    if draft.stage.name == "encode_video":
        return "a video needs a clip of frames; write it to an image path (.png) instead"
    return f"stage {draft.stage.name!r} needs a clip of frames"


def parse_recipe(text: str, *, source: str = "<string>", overrides: Iterable[str] = (),
                 path: str | Path | None = None) -> Recipe:
    """Validate recipe YAML ``text`` completely and return the :class:`Recipe`.

    Args:
        text: the YAML.
        source: name used in error messages (the file name).
        overrides: ``"dotted.path=value"`` strings applied before validation (values are YAML).
        path: the file the text came from (relative input paths resolve against its folder).

    Returns:
        The validated recipe, steps in dependency order.

    Raises:
        RecipeError: YAML syntax, unknown keys/stages, missing or cyclic references, kind
            mismatches, unsafe output paths.
        ParamError: a parameter of the wrong type, out of range or inconsistent.

    Example:
        >>> r = parse_recipe("seed: 3\\nsteps:\\n  a: {stage: fractal}\\n"
        ...                  "  b: {stage: perona_malik, input: a, params: {steps: 2, kappa: 0.1, dt: 0.2}}")
        >>> [s.name for s in r.steps], r.seed
        (['a', 'b'], 3)
        >>> parse_recipe("steps:\\n  a: {stage: fractl}")
        Traceback (most recent call last):
        ...
        minart.errors.RecipeError: <string>:2:14: step 'a': unknown stage 'fractl'; did you mean 'fractal'?
    """
    if not isinstance(text, str):
        raise RecipeError(f"recipe text must be a string, got {type(text).__name__}",
                          file=source)
    doc = _Doc(text, source)
    overrides = tuple(overrides)
    if overrides and doc.data is None:
        doc.data = {}
    for item in overrides:
        _apply_override(doc, item)
    doc.check_swallowed()
    resolved = Path(path) if path is not None else None
    default_name = name_from_stem(resolved.stem) if resolved is not None else "recipe"
    return _build(doc, path=resolved, text=text, overrides=overrides, default_name=default_name)


def load_recipe(path: str | Path, overrides: Iterable[str] = ()) -> Recipe:
    """Read and validate the recipe file at ``path`` (see :func:`parse_recipe`).

    Args:
        path: the YAML file; errors name it as given, relative input paths resolve against its
            folder and the recipe's name defaults to its stem.
        overrides: ``"dotted.path=value"`` strings applied before validation.

    Returns:
        The validated :class:`Recipe` (``text`` and ``path`` set, for ``minart reproduce``).

    Raises:
        RecipeError: the file is missing or unreadable, or the recipe is invalid.
        ParamError: a parameter is invalid.

    Example:
        >>> load_recipe("no/such/recipe.yaml")
        Traceback (most recent call last):
        ...
        minart.errors.RecipeError: no/such/recipe.yaml: no such recipe file
    """
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecipeError("no such recipe file", file=source) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError(f"cannot read the recipe: {exc}", file=source) from None
    return parse_recipe(text, source=source, overrides=overrides, path=Path(path))


# -- JSON Schema ---------------------------------------------------------------------------------


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


def recipe_schema() -> dict[str, Any]:
    """The JSON Schema of recipe files, generated from the stages' parameter models.

    Steps are a union discriminated on ``stage``, so editors complete and check each stage's
    ``params``.

    Returns:
        A JSON Schema (draft 2020-12) as a dict; ``minart schema`` writes it as JSON.

    Example:
        >>> schema = recipe_schema()
        >>> "perona_malik" in json.dumps(schema), schema["title"]
        (True, 'minart recipe')
    """
    forbid = ConfigDict(extra="forbid")
    step_models = []
    for stage in _all_stages():
        step_models.append(create_model(
            f"{_camel(stage.name)}Step", __config__=ConfigDict(
                extra="forbid", title=f"{stage.name} step",
                json_schema_extra={"description": stage.summary}),
            stage=(Literal[stage.name], Field(..., description=stage.summary)),
            input=(str | None, Field(None, description="The step whose result this step reads.")),
            inputs=(list[str] | None, Field(None, description="The steps this step reads, in "
                                            f"order ({stage.input_names() or 'none'}).")),
            params=(stage.params | None, None),
        ))
    step_union = Union[tuple(step_models)]  # noqa: UP007
    writer_fields: dict[str, Any] = {}
    for model in (_stages.SaveImageParams, _stages.EncodeVideoParams):
        for fname, finfo in model.model_fields.items():
            if fname != "path":
                writer_fields[fname] = (finfo.annotation | None, Field(
                    None, description=finfo.description))
    output_model = create_model(
        "Output", __config__=ConfigDict(extra="forbid", title="output"),
        step=(str, Field(..., description="The step whose result is written.")),
        path=(str, Field(..., description="File inside the output folder; a template with "
                         "{name}, {seed}, {date}, {step}. The extension picks the format.")),
        sheet=(_stages.ContactSheetParams | bool | None, Field(None, description=(
            "For clips written to an image path: a contact sheet of evenly spaced frames."))),
        **writer_fields,
    )
    size_model = create_model("Size", __config__=forbid,
                              width=(int, Field(..., ge=8, le=16384)),
                              height=(int, Field(..., ge=8, le=16384)))
    recipe_model = create_model(
        "Recipe", __config__=ConfigDict(extra="forbid", title="minart recipe"),
        name=(str, Field("recipe", pattern=_RECIPE_NAME.pattern,
                         description="Used in output file names ({name}).")),
        description=(str, Field("", description="What the recipe makes, for people.")),
        seed=(int, Field(0, ge=0, le=2**63 - 1, description="Seed of every random choice.")),
        device=(str, Field("auto", pattern=_DEVICE.pattern, description=(
            "auto (a GPU when there is one), cpu, mps, cuda or cuda:N."))),
        size=(tuple[int, int] | size_model, Field(list(DEFAULT_SIZE), description=(
            "Default [width, height] of generated images."))),
        steps=(dict[str, Annotated[step_union, Field(discriminator="stage")]], Field(
            ..., description="Step name -> what it runs.")),
        outputs=(dict[str, output_model], Field({}, description="Output name -> file.")),
    )
    schema = recipe_model.model_json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}

