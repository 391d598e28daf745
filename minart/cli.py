"""The ``minart`` command line: check recipes, list and describe stages, write the schema.

``app`` is the typer application; the render commands (``run``, ``cache``, ``reproduce``,
``server``) register on it from their own modules and import Prefect lazily, so
``import minart.cli`` stays light. :func:`main` turns every :class:`~minart.errors.MinartError`
into one or two lines on stderr, without a traceback, and its exit status: 2 for what the
recipe or the arguments can fix, 1 for a failure of the machine (a full disk, an unwritable
cache; :attr:`~minart.errors.MinartError.exit_status`).
"""

from __future__ import annotations

import json
import sys
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from ._entry import EXIT_INTERRUPTED, interrupted  # the script's start-up answers Ctrl-C too
from .errors import EXIT_INVALID, MinartError, ParamError  # noqa: F401 - EXIT_INVALID: re-exported

__all__ = ["app", "describe_stage", "main", "params_table"]

app = typer.Typer(
    name="minart",
    help=(
        "Generative art from fractals, Perona-Malik diffusion and minimization art.\n\n"
        "A recipe (YAML) names steps that run stages on each other's results and outputs that "
        "write files. Start with:\n\n"
        "  minart stages                       # what a step can do\n\n"
        "  minart describe perona_malik        # one stage's parameters\n\n"
        "  minart check recipes/ocean.yaml     # validate a recipe without running it\n\n"
        "  minart check recipes/ocean.yaml --set steps.art.params.lr=1e-6\n\n"
        "  minart schema -o recipes/schema.json   # JSON Schema for editors"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

SetOption = Annotated[
    Optional[list[str]],  # noqa: UP045  (typer reads the annotation at run time)
    typer.Option(
        "--set", "-s", metavar="PATH=VALUE",
        help="Override a recipe value before validation, e.g. --set steps.art.params.lr=1e-6 "
             "or --set seed=3 (the value is read as YAML, except that '#00ff00' is a colour and "
             "a name, description or path is taken as written; repeat for several).",
    ),
]


def _echo_error(message: str) -> None:
    typer.echo(f"error: {message}", err=True)


_INTERRUPTED = "interrupted"
_interrupted_message = _INTERRUPTED  # what Ctrl-C prints; a render says how to resume


def on_interrupt(message: str) -> None:
    """Say ``error: <message>`` if the command is stopped by Ctrl-C (default: ``interrupted``)."""
    global _interrupted_message
    _interrupted_message = message


@app.command()
def check(
    recipe: Annotated[Path, typer.Argument(help="The recipe file (YAML).", metavar="RECIPE",
                                           show_default=False)],
    set_: SetOption = None,
    preview: Annotated[bool, typer.Option(
        "--preview", help="Check the quick preview variant (a quarter of the size).")] = False,
    device: Annotated[Optional[str], typer.Option(  # noqa: UP045
        "--device", help="Check memory for this device: cpu, cuda, cuda:N, mps or auto "
                         "(default: the recipe's device, as 'minart run' uses it).")] = None,
) -> None:
    """Validate a recipe completely without running anything.

    Checks YAML syntax, keys, stage names, parameter types and ranges, references between
    steps, cycles, image-versus-clip mismatches, output paths, and the size of every step's
    result: inputs that do not fit together (a blend of two sizes, a crossfade of a clip of the
    wrong length, an odd-sized MP4 with pad: refuse) are found here, before anything runs, and
    so is a step whose result cannot fit in the memory of the device the run would use.
    Prints an OK line and one line per step (what it makes, and its memory), or the first
    problem as FILE:LINE:COLUMN: step 'NAME': message, and exits with status 2. A parameter
    that is valid but has no effect (refresh_at without a refresh, eps with a Multibrot) is a
    'warning:' line in the same form; the recipe still checks OK.

    Examples:

      minart check recipes/ocean.yaml

      minart check recipes/ocean.yaml --set steps.soften.params.dt=0.4 --set seed=11
    """
    from .recipe import load_recipe

    loaded = load_recipe(recipe, tuple(set_ or ()))
    if preview:
        loaded = loaded.preview()
    for message in loaded.warnings:  # valid parameters with no effect
        typer.echo(f"warning: {message}", err=True)
    unchecked = _plan_like_a_run(loaded, device)
    user_steps = [s for s in loaded.steps if not s.name.startswith("out.")]
    width, height = loaded.size
    files = [s.params.path for s in loaded.steps if s.stage in ("save_image", "encode_video")]
    count = f"{len(user_steps)} step" + ("s" if len(user_steps) != 1 else "")
    typer.echo(f"OK {recipe}: '{loaded.name}', {count} "
               f"({', '.join(s.name for s in user_steps)}), {width}x{height}, seed "
               f"{loaded.seed}; writes {', '.join(files) or 'no files'}")
    from .cache import format_size
    from .shapes import describe, nbytes

    shown = [s for s in loaded.steps if s.stage not in ("save_image", "encode_video")]
    # (writers pass their input on unchanged; a step added by outputs: goes by the output's key)
    labels = [f"outputs.{s.name.split('.')[1]}" if s.name.startswith("out.") else s.name
              for s in shown]
    name_width = max(map(len, labels), default=0)
    stage_width = max((len(s.stage) for s in shown), default=0)
    for label, step in zip(labels, shown, strict=True):
        made = "size unknown until it runs" if step.shape is None else (
            f"{describe(step.shape)}, {format_size(nbytes(step.shape))}")
        typer.echo(f"  {label:<{name_width}}  {step.stage:<{stage_width}}  {made}")
    if unchecked:
        typer.echo(f"  (memory not checked: {unchecked})")


def _plan_like_a_run(loaded: Any, device: str | None) -> str | None:
    """Plan ``loaded`` as ``minart run`` would (memory pre-flight, output paths) on its device.

    Returns:
        Why memory was not checked (the recipe's device is not on this machine), else None.

    Raises:
        MinartError: what the run would refuse before starting.
    """
    from . import engine

    unchecked = None
    try:
        target = engine.resolve_device(device or loaded.device)
    except ParamError as exc:
        if device is not None:  # asked for on the command line: as 'run --device' would fail
            raise
        # a recipe meant for another machine (a GPU pool) checks everything but memory here
        target, unchecked = loaded.device, exc.message.split("; ", 1)[0]
    engine.plan(loaded, device=target)
    return unchecked


@app.command("stages")
def list_stages() -> None:
    """List every stage a recipe step can use, one per line: name, input -> output, summary."""
    from .registry import stages

    listed = stages()
    name_width = max(len(s.name) for s in listed)
    flow_width = max(len(_flow(s)) for s in listed)
    for stage in listed:
        typer.echo(f"{stage.name:<{name_width}}  {_flow(stage):<{flow_width}}  {stage.summary}")


def _flow(stage: Any) -> str:
    if stage.generator:
        consumed = "none"
    else:
        kinds = "|".join(stage.consumes)
        consumed = stage.input_names(lambda n: f"{n}:{kinds}")
    produced = "same" if stage.produces == "same" else stage.produces
    return f"{consumed} -> {produced}"


_UNIONS = (typing.Union, types.UnionType)
"""What ``typing.get_origin`` gives for ``Union[a, b]`` and for ``a | b``."""


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin is typing.Literal:
        return " | ".join(json.dumps(a) for a in args)
    if origin in _UNIONS:
        return " or ".join(_type_name(a) for a in args if a is not type(None)) + (
            " (optional)" if type(None) in args else "")
    if origin in (tuple, list):
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            return f"[{_type_name(args[0])}, ...]"
        inner = ", ".join(_type_name(a) for a in args) if origin is tuple else \
            f"{_type_name(args[0])}, ..."
        return f"[{inner}]"
    if isinstance(annotation, type):
        return {"str": "text", "float": "number", "int": "whole number",
                "bool": "true/false"}.get(annotation.__name__, annotation.__name__)
    return str(annotation)


def _bounds(metadata: typing.Iterable[Any]) -> list[str]:
    """``[">= 0", "<= 1"]`` from pydantic/annotated-types constraints."""
    parts = []
    for item in metadata:
        for attr, sign in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            value = getattr(item, attr, None)
            if value is not None:
                parts.append(f"{sign} {value:g}" if isinstance(value, float) else
                             f"{sign} {value}")
    return parts


def _counts(metadata: typing.Iterable[Any]) -> tuple[int | None, int | None]:
    """The fewest and most items a list constraint allows (``None``: no limit)."""
    low = high = None
    for item in metadata:
        for inner in [item, *getattr(item, "metadata", [])]:  # a Field() nests its constraints
            low = getattr(inner, "min_length", None) if low is None else low
            high = getattr(inner, "max_length", None) if high is None else high
    return low, high


def _limits(info: FieldInfo) -> str:
    """The limits column: the field's own bounds or, for a value-or-list field (a sweep's
    ``kappa``), those of each value and how many values a list takes."""
    parts = _bounds(info.metadata)
    if parts or typing.get_origin(info.annotation) not in _UNIONS:
        return ", ".join(parts)
    each: list[str] = []
    count = ""
    for arg in typing.get_args(info.annotation):
        if typing.get_origin(arg) is not typing.Annotated:
            continue
        base, *metadata = typing.get_args(arg)
        if typing.get_origin(base) in (tuple, list):
            low, high = _counts(metadata)
            if high is not None:
                count = f"{low or 0} to {high} values" if low != high else f"{high} values"
            item = typing.get_args(base)[0] if typing.get_args(base) else None
            if typing.get_origin(item) is typing.Annotated:
                metadata = typing.get_args(item)[1:]
            else:
                continue
        each += [b for b in _bounds(metadata) if b not in each]
    text = f"each {', '.join(each)}" if each else ""
    return "; ".join(p for p in (text, count) if p)


def _default(info: FieldInfo) -> str:
    if info.is_required():
        return "required"
    value = info.get_default()
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, tuple):
        return json.dumps([round(v, 6) if isinstance(v, float) else v for v in value])
    return json.dumps(value)


def params_table(model: type[BaseModel], *, markdown: bool = False) -> str:
    """The parameters of a stage model as a text or Markdown table (name, type, default,
    limits, description), generated from the model so it never disagrees with it.

    Args:
        model: a stage's parameter model.
        markdown: a Markdown table instead of aligned text.

    Returns:
        The table (``"(no parameters)"`` for an empty model).

    Example:
        >>> from minart.registry import get_stage
        >>> print(params_table(get_stage("subsample").params).splitlines()[0])
        every   whole number  default 2  >= 1, <= 10000  Keep one frame in this many.
    """
    rows = []
    for name, info in model.model_fields.items():
        rows.append((name, _type_name(info.annotation), _default(info), _limits(info),
                     info.description or ""))
    if not rows:
        return "(no parameters)"
    if markdown:
        lines = ["| parameter | type | default | limits | description |",
                 "|---|---|---|---|---|"]
        lines += [f"| `{n}` | {t.replace('|', '&#124;')} | `{d}` | {lim} | {desc} |"
                  for n, t, d, lim, desc in rows]
        return "\n".join(lines)
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join(
        f"{n:<{widths[0]}}  {t:<{widths[1]}}  "
        f"{('default ' + d) if d != 'required' else d:<{widths[2] + 8}}  "
        f"{lim:<{widths[3]}}  {desc}".rstrip()
        for n, t, d, lim, desc in rows
    )


def describe_stage(name: str, *, markdown: bool = False) -> str:
    """Everything about one stage: summary, inputs and output, version and parameter table.

    Args:
        name: the stage name.
        markdown: a Markdown section (as in ``docs/recipes.md``) instead of plain text.

    Returns:
        The description.

    Raises:
        RecipeError: unknown stage (with a suggestion).

    Example:
        >>> describe_stage("reverse").splitlines()[0]
        'reverse: Play a clip backwards.'
    """
    from .registry import get_stage

    stage = get_stage(name)
    head = f"## `{stage.name}`\n\n{stage.summary}" if markdown else f"{stage.name}: {stage.summary}"
    facts = [f"takes: {_flow(stage)}", f"version: {stage.version}"]
    if stage.function:
        facts.append(f"library: {stage.function.replace(':', '.')}")
    if markdown:
        body = "\n".join(f"- {f}" for f in facts)
        return f"{head}\n\n{body}\n\n{params_table(stage.params, markdown=True)}\n"
    return "\n".join([head, *("  " + f for f in facts), "",
                      params_table(stage.params)])


@app.command()
def describe(
    stage: Annotated[str, typer.Argument(help="A stage name, see 'minart stages'.", metavar="STAGE",
                                         show_default=False)],
    markdown: Annotated[bool, typer.Option("--markdown", help="Print a Markdown section.")]
    = False,
) -> None:
    """Show a stage's inputs, output and parameters (types, defaults, limits, meaning).

    Example:

      minart describe minimize
    """
    typer.echo(describe_stage(stage, markdown=markdown))


@app.command()
def schema(
    output: Annotated[Optional[Path], typer.Option(  # noqa: UP045
        "--output", "-o", help="Write to this file instead of stdout.")] = None,
) -> None:
    """Print the JSON Schema of recipe files (for editor completion and checks).

    Recipes opt in with a first line such as
    '# yaml-language-server: $schema=./schema.json'.

    Example:

      minart schema -o recipes/schema.json
    """
    from .engine import check_writable_file
    from .recipe import recipe_schema

    text = json.dumps(recipe_schema(), indent=2, sort_keys=False) + "\n"
    if output is None:
        typer.echo(text, nl=False)
    else:
        check_writable_file(output, "--output")
        try:
            output.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise ParamError(f"--output {output}: cannot write it ({exc.strerror or exc})",
                             param="--output") from None
        typer.echo(f"wrote {output}")


from . import cli_render  # noqa: E402, F401  (registers run, reproduce, cache, server)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``minart`` script: run ``app``, report MinartErrors without traceback.

    Args:
        argv: arguments without the program name (default ``sys.argv[1:]``).

    Returns:
        The exit status (0 success, 2 invalid recipe or arguments, 1 other failures); the
        ``minart`` script exits with it.

    Example:
        >>> main(["describe", "reverse"])
        reverse: Play a clip backwards.
          takes: frames:frames -> frames
          version: 1
          library: minart.composite.reverse
        <BLANKLINE>
        (no parameters)
        0
    """
    on_interrupt(_INTERRUPTED)
    # a Ctrl-C that a library swallowed (one in the middle of `import torch`) still ends the
    # command as one: what follows it, a success or an error from a half-imported module, is
    # reported as the interruption it comes from
    try:
        app(args=argv, prog_name="minart")  # usage errors: click prints them and exits 2
        code = 0
    except MinartError as exc:
        if not interrupted():
            _echo_error(str(exc))
            return exc.exit_status
    except KeyboardInterrupt:  # (typer turns it into exit status 130 first)
        code = EXIT_INTERRUPTED
    except SystemExit as exc:
        code = exc.code
    except Exception:
        if not interrupted():
            raise
    if interrupted():
        code = EXIT_INTERRUPTED
    if code == EXIT_INTERRUPTED:
        _echo_error(_interrupted_message)
    return code if isinstance(code, int) else (0 if code is None else 1)


if __name__ == "__main__":  # python -m minart.cli: the render commands register on minart.cli's app
    from minart.cli import main as _main

    sys.exit(_main())
