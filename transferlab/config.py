"""The constants block at the top of a script, and its overrides from the shell.

A script defines its constants as plain upper-case assignments, each with a short trailing comment,
then calls `CONFIG = configure(globals(), sys.argv[1:])`. Every constant can then be overridden as
`--name=value` (the lower-case name). `configure` is the one place that sets them: the shell's values, then
the recipe's for those left at None, then the derived ones, written into the script's globals once and
returned as a frozen Config (the record's "config"); nothing writes them afterwards.

Values are parsed with `ast.literal_eval` (never `eval`); a value that is not a Python literal is taken as a
string. Each value is checked against the type of the constant's default, or against its annotation when the
default is None (`DATA_DIR: str | None = None`), and every number against the range its name gives it
(RANGES: `*_EPOCHS` >= 0, `*_SPLIT` in (0, 1), ...).
"""

import ast
import collections.abc
import difflib
import fnmatch
import io
import os
import sys
import tokenize
import types
import typing

from transferlab import process
from transferlab.errors import UserError, check

# Constants renamed so that one idea has one name in every script: {old: new}. A script that has the new name
# and not the old one still takes --old=value, with a one-line notice, for one release.
RENAMED = {
    "VALIDATION_FRACTION": "VALIDATION_SPLIT",  # cifar10_transfer.py's, as the other scripts name it
    "HEAD_WIDTH": "HEAD",  # inception_transfer.py's one hidden layer: now a list of widths, as mobilenet's
    "DROPOUT": "HEAD_DROPOUT",  # inception_transfer.py's
    "TASK_B_SAMPLES_PER_CLASS": "SAMPLES_PER_CLASS",  # in the scripts that have no task B
}


class Config(collections.abc.Mapping):
    """A run's constants once `configure` has set them: read-only, by name (`CONFIG.EPOCHS`, `CONFIG["EPOCHS"]`),
    a mapping of NAME to value in the order the script defines them."""

    def __init__(self, values):
        object.__setattr__(self, "_values", dict(values))

    def __getitem__(self, name):
        return self._values[name]

    def __iter__(self):
        return iter(self._values)

    def __len__(self):
        return len(self._values)

    def __getattr__(self, name):
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name, value):
        raise AttributeError(f"a run's constants are frozen: set {name} in the constants block or with "
                             f"--{name.lower()}=")

    def __repr__(self):
        return f"Config({self._values!r})"


def check_positive(**values):
    """Each named value must be > 0: `check_positive(EPOCHS=EPOCHS)` stops with "--epochs must be > 0, got 0".
    None passes (a constant that may be left unset, as TASK_B_SAMPLES_PER_CLASS)."""
    for name, value in values.items():
        check(value is None or value > 0, f"--{name.lower()} must be > 0, got {value}")


def check_non_negative(**values):
    """Each named value must be >= 0 (a count of epochs where 0 skips the phase)."""
    for name, value in values.items():
        check(value >= 0, f"--{name.lower()} must be >= 0, got {value}")


def check_fraction(**values):
    """Each named value must lie strictly between 0 and 1 (a share of the data, a momentum)."""
    for name, value in values.items():
        check(0 < value < 1, f"--{name.lower()}={value}: must be in (0, 1)")


def check_dropout(**values):
    """Each named value must lie in [0, 1) (a share of units dropped: 0 drops none, 1 would drop all)."""
    for name, value in values.items():
        check(0 <= value < 1, f"--{name.lower()}={value}: must be in [0, 1)")


def check_threshold(**values):
    """Each named value must lie in (0, 1] (an accuracy to reach: 1.0 is reached only by a perfect score)."""
    for name, value in values.items():
        check(0 < value <= 1, f"--{name.lower()}={value}: must be in (0, 1]")


# A constant's name says the range of its values, so that every script checks its constants the same way and a
# new constant named like these needs no check of its own: (name pattern, its check), the first match decides.
# None passes every check: a constant left unset, or one that a recipe fills and that is checked once filled.
RANGES = (
    ("EPOCHS", check_positive),  # the first phase's epochs
    ("*_EPOCHS", check_non_negative),  # a later phase's: 0 skips it
    ("*BATCH_SIZE", check_positive),
    ("*LEARNING_RATE", check_positive),
    ("*IMAGE_SIZE", check_positive),
    ("*SAMPLES_PER_CLASS", check_positive),
    ("*_WIDTH", check_positive),
    ("*_FRACTION", check_fraction),
    ("*_SPLIT", check_fraction),
    ("*_MOMENTUM", check_fraction),
    ("*DROPOUT", check_dropout),
    ("*_ACCURACY", check_threshold),
    ("*_STEPS", check_non_negative),  # at least this many steps: 0 asks for none
)


def check_ranges(values):
    """Check each number in {NAME: value} by the first of RANGES whose pattern its name matches."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        for pattern, check_range in RANGES:
            if fnmatch.fnmatchcase(name, pattern):
                check_range(**{name: value})
                break


def check_choice(**values):
    """Each named (value, choices) pair: the value must be one of the choices."""
    for name, (value, choices) in values.items():
        check(value in choices, f"--{name.lower()}={value}: expected one of {', '.join(map(str, choices))}")


def constants(namespace):
    """The constants of a script's namespace, in the order they were defined: {NAME: value}."""
    return {
        name: value
        for name, value in namespace.items()
        if name.isupper() and not name.startswith("_") and _is_constant_value(value)
    }


def _is_constant_value(value):
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    return isinstance(value, (list, tuple)) and all(_is_constant_value(v) for v in value)


def allowed_types(default, annotation=None):
    """The types a constant accepts: from its annotation if it has one, else its default's type."""
    if annotation is not None:
        if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
            return tuple(type(None) if t is None else typing.get_origin(t) or t for t in typing.get_args(annotation))
        return (typing.get_origin(annotation) or annotation,)
    return (type(default),)


def parse_value(name, raw, default, annotation=None):
    """Turn the text of `--name=raw` into a value of the constant's type, or raise UserError."""
    allowed = allowed_types(default, annotation)
    flag = f"--{name.lower()}={raw}"
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        value = raw  # not a Python literal: a plain string
    if value is None:
        check(type(None) in allowed, f"{flag}: {name} may not be None (expected {_type_names(allowed)})")
        return None
    if str in allowed and not isinstance(value, str):
        others = tuple(t for t in allowed if t not in (str, type(None), list))
        if not (others and isinstance(value, others) and not isinstance(value, bool)):
            return raw  # a string constant takes the text as written: --run_name=007 is "007"
    if list in allowed:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        elif isinstance(value, tuple):
            value = list(value)
        elif not isinstance(value, list):
            value = [value]  # --task_b_classes=7 means [7]
        element = type(default[0]) if isinstance(default, list) and default else None
        if element is not None:
            value = [_coerce_scalar(flag, v, (element,)) for v in value]
        return value
    return _coerce_scalar(flag, value, allowed)


def _coerce_scalar(flag, value, allowed):
    if isinstance(value, bool):
        check(bool in allowed, f"{flag}: expected {_type_names(allowed)}, got a bool")
        return value
    if isinstance(value, int) and int not in allowed and float in allowed:
        return float(value)  # --learning_rate=1 is 1.0
    check(
        isinstance(value, allowed) and not isinstance(value, bool),
        f"{flag}: expected {_type_names(allowed)}, got {type(value).__name__} {value!r}",
    )
    return value


def _type_names(allowed):
    return " or ".join("None" if t is type(None) else t.__name__ for t in allowed)


def comments(source):
    """{NAME: trailing comment} for the top-level constant assignments in a script's source text."""
    found = {}
    line_name = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        row, col = tok.start
        if tok.type == tokenize.NAME and col == 0 and tok.string.isupper():
            line_name[row] = tok.string
        elif tok.type == tokenize.COMMENT and row in line_name:
            found[line_name[row]] = tok.string.lstrip("#").strip()
    return found


def help_text(namespace, script, shared=None):
    """The --help page: usage, the script's docstring, and every constant with its default (with the comment
    beside it in the script, or in the `shared` module's source). A constant whose default is None and that a
    recipe fills (a script's RECIPES: {name: {CONSTANT: value}}) shows the value it takes in each recipe."""
    values = constants(namespace)
    notes = {}
    for path in ([shared.__file__] if shared else []) + [script]:
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                notes.update(comments(f.read()))
    doc = (namespace.get("__doc__") or "").strip()
    lines = [f"usage: python {os.path.basename(script)} [--name=value ...] [--debug]", ""]
    if doc:
        lines += [doc, ""]
    lines.append("constants (override as --name=value; values are Python literals, else strings):")
    flags = {name: f"--{name.lower()}={values[name]!r}" for name in values}
    flags["DEBUG"] = "--debug"
    notes["DEBUG"] = "show tracebacks for bad input instead of one line"
    recipes = namespace.get("RECIPES") or {}
    for name in values:
        filled = {recipe: settings[name] for recipe, settings in recipes.items() if name in settings}
        if values[name] is None and filled:
            shown = ", ".join(f"{value!r} for {recipe}" for recipe, value in filled.items())
            notes[name] = f"{notes.get(name, '')} [None: {shown}]".strip()
    width = min(max(len(f) for f in flags.values()), 36)  # a long default does not push every comment away
    for name, flag in flags.items():
        lines.append(f"  {flag.ljust(width)}  {notes.get(name, '')}".rstrip())
    return "\n".join(lines)


def apply_overrides(namespace, argv):
    """{NAME: value} of the constants in `namespace` after the `--name=value` arguments (the namespace is left as
    it is: `configure` writes it). An old name of a constant (RENAMED) sets the new one, with a notice."""
    values = constants(namespace)
    annotations = namespace.get("__annotations__", {})
    valid = ", ".join(f"--{name.lower()}" for name in values)
    for arg in argv:
        if arg == "--debug":
            process.DEBUG = True
            continue
        check(
            arg.startswith("--") and "=" in arg,
            f"expected --name=value, got {arg!r}; valid names: {valid}",
        )
        flag, raw = arg[2:].split("=", 1)
        name = flag.upper()
        if flag == flag.lower() and name not in values and RENAMED.get(name) in values:
            name = RENAMED[name]
            print(f"notice: --{flag} is now --{name.lower()}; the old name works until the next release",
                  file=sys.stderr)
        elif not (name in values and flag == flag.lower()):
            near = difflib.get_close_matches(flag.lower(), [known.lower() for known in values], n=1)
            hint = f" (did you mean --{near[0]}?)" if near else ""
            raise UserError(f"unknown constant --{flag}{hint}; valid names: {valid}")
        values[name] = parse_value(name, raw, values[name], annotations.get(name))
    return values


def fill_from_recipe(values, recipe):
    """{NAME: value} with the constants left at None taking the `recipe`'s value, so one constant (a dataset,
    say) can switch a whole experiment while any constant set on the command line still wins; checked
    (RANGES)."""
    filled = {name: recipe[name] if value is None and name in recipe else value for name, value in values.items()}
    check_ranges(filled)
    return filled


def configure(namespace, argv, shared=None, recipe=None, derive=None):
    """Handle --help, set the script's constants, and report UserErrors as one line. In order:
    1. `shared`, a module of constants (transferlab.run_constants), adds those the script does not set itself;
    2. the `--name=value` overrides (apply_overrides), every number checked by its name (RANGES);
    3. `recipe(config)`, when given, returns the recipe ({NAME: value}) that fills the constants left at None
       (fill_from_recipe; it may raise UserError for a recipe that does not fit);
    4. `derive(config)`, when given, returns {NAME: value} of constants computed from the others.
    The result is written into the script's globals once, here, and returned as a frozen Config: what the run
    record stores as `config`."""
    if shared is not None:
        annotations = namespace.setdefault("__annotations__", {})
        for name, value in constants(vars(shared)).items():
            if name not in namespace:
                namespace[name] = value
                if name in vars(shared).get("__annotations__", {}):
                    annotations.setdefault(name, shared.__annotations__[name])
    if "-h" in argv or "--help" in argv:
        try:
            print(help_text(namespace, namespace.get("__file__", "script.py"), shared), flush=True)
        except BrokenPipeError:  # `--help | head` stopped reading: not an error, and nothing more to say
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
    check_later_constants(namespace)
    process.install()
    try:
        values = apply_overrides(namespace, argv)
        check_ranges(values)
        if recipe is not None:
            values = fill_from_recipe(values, recipe(Config(values)))
        if derive is not None:
            values.update(derive(Config(values)))
            check_ranges(values)
    except UserError as error:
        process.fail(error)
    namespace.update(values)
    return Config(values)


def check_later_constants(namespace):
    """A script's LATER_CONSTANTS ({phase: [CONSTANT, ...]}, the constants that only phases after a reusable
    one read) may name only its constants: a misspelt name is a mistake in the script, said at start-up."""
    known = constants(namespace)
    for phase, names in (namespace.get("LATER_CONSTANTS") or {}).items():
        unknown = [name for name in names if name not in known]
        if unknown:
            raise NameError(f"LATER_CONSTANTS[{phase!r}] names {', '.join(unknown)}: not constants of this script")
