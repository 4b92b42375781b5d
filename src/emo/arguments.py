"""Command lines and config files read as a person typed them: a bad option, value or config file is one line that
names it (with a suggestion for a misspelt option), exit status 2, never the full usage or a traceback.

`OneLineErrors` joins any jsonargparse parser: the Lightning CLI's (`emo.fit.parser`) and those of
`emo report` and `emo sync` (`OneLineParser`).
"""

import difflib
import re
import sys
from pathlib import Path

import yaml
from jsonargparse import ArgumentParser

from emo import UsageError

USAGE_STATUS = 2  # the command line or a config file; 1 is everything a command read or met (emo.UserError)


def one_line(message: str) -> str:
    """jsonargparse's multi-line report of a bad value, as the one line that names the option and the problem."""
    key = re.match(r'Parser key "([^"]+)":', message)
    prefix = f"--{key.group(1)}: " if key else ""
    body = message[key.end() :] if key else message
    lines = [re.sub(r"^- ", "", line.strip()) for line in body.splitlines() if line.strip()]
    if lines and lines[0].startswith("Does not validate against any of the Union subtypes"):
        specific = [
            line for line in lines if re.search(r"is not accepted|does not conform|Not of type|does not exist", line)
        ]
        if specific:
            return prefix + "; ".join(dict.fromkeys(specific))
        given = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("Given value:")), "?")
        expected = [line for line in lines if line.startswith("Expected a typing.Literal[")]
        choices = [choice for line in expected for choice in re.findall(r"Literal\[([^\]]*)\]", line)]
        if choices:
            return f"{prefix}{given} is not one of {', '.join(choices)}" + (", null" if "NoneType" in body else "")
        subtypes = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("Subtypes:")), "")
        expected = [what for subtype in top_level(subtypes.strip("[]")) if (what := describe_type(subtype, given))]
        if expected:
            listed = f"{', '.join(expected[:-1])} or {expected[-1]}" if len(expected) > 1 else expected[0]
            return f"{prefix}expected {listed} (given {given})"
        return f"{prefix}{lines[0]} (given {given})"
    return prefix + " ".join(lines)


def top_level(text: str) -> list[str]:
    """`list[str], dict[str, int], <class 'NoneType'>` -> its items, commas inside brackets kept."""
    items, depth, start = [], 0, 0
    for i, char in enumerate(text):
        if char in "[(":
            depth += 1
        elif char in "])":
            depth -= 1
        elif char == "," and depth == 0:
            items.append(text[start:i].strip())
            start = i + 1
    return [item for item in [*items, text[start:].strip()] if item]


PLAIN_TYPES = {
    "bool": "true/false",
    "int": "an integer",
    "float": "a number",
    "str": "a text",
    "NoneType": "null",
    "dict": "a mapping",
    "list": "a list",
    "Path": "a path",
}


def describe_type(subtype: str, given: str) -> str:
    """One of a union's types as a person would name it; a list shows the value given as one item."""
    name = re.sub(r"^<class '(?:[\w.]+\.)?(\w+)'>$", r"\1", subtype)
    if name.startswith(("list[", "List[", "tuple[", "Sequence[")) or name == "list":
        return f"a list (e.g. [{given}])" if given and not given.startswith("[") else "a list"
    if name.startswith(("dict[", "Dict[", "Mapping[")):
        return "a mapping"
    if name in PLAIN_TYPES:
        return PLAIN_TYPES[name]
    words = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", name).lower().replace(" int", " integer").replace(" float", " number")
    return f"a {words}" if re.fullmatch(r"[a-z ]+", words) else name


def known_options(parser) -> list[str]:
    """The option names of a parser and of its subcommands' parsers."""
    parsers = [parser, *getattr(getattr(parser, "_subcommands_action", None), "_name_parser_map", {}).values()]
    return [action.dest for each in parsers for action in each._actions if action.dest and action.dest != "help"]


class OneLineErrors:
    """A parser mixin: errors as one line, with a suggestion for a misspelt option, instead of the full usage."""

    def error(self, message: str, ex: Exception | None = None):
        if not self.exit_on_error:
            return super().error(message, ex)
        message = one_line(message)
        unknown = re.search(r"(?:unrecognized arguments: |does not accept option )'?-*([\w.]+)", message)
        if unknown:
            close = difflib.get_close_matches(unknown.group(1), known_options(self), n=1, cutoff=0.75)
            if close:
                message += f" (did you mean --{close[0]}?)"
        print(f"emo: error: {message}", file=sys.stderr)
        sys.exit(USAGE_STATUS)


class OneLineParser(OneLineErrors, ArgumentParser):
    """jsonargparse's parser with one-line errors (`emo report`, `emo sync`)."""


def check_config_files(args: list[str]) -> None:
    """Each `--config` file is a YAML mapping of settings: else one line with the file (and line and column)."""
    for flag, path in zip(args, args[1:], strict=False):
        if flag in ("--config", "-c") and Path(path).is_file():
            try:
                settings = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
            except yaml.YAMLError as error:
                mark = getattr(error, "problem_mark", None)
                where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else path
                raise UsageError(f"{where}: not valid YAML ({getattr(error, 'problem', None) or error})") from None
            except UnicodeDecodeError:
                raise UsageError(f"{path}: not a text (UTF-8) file") from None
            if settings is None:
                raise UsageError(
                    f"{path}: an empty config file; a config holds settings, e.g. 'model:' then '  dropout: 0.1'"
                )
            if not isinstance(settings, dict):
                raise UsageError(
                    f"{path}: a config file holds a mapping of settings (model: ..., data: ...), not {type(settings).__name__}"
                )
