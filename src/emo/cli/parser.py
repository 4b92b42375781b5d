"""The command line's parser: a bad option, value or config file is one line that names it, not the full usage."""

import difflib
import re
import sys
from pathlib import Path

import yaml
from lightning.pytorch.cli import LightningArgumentParser

from emo import UserError


def one_line(message: str) -> str:
    """jsonargparse's multi-line report of a bad value, as the one line that names the option and the problem."""
    key = re.match(r'Parser key "([^"]+)":', message)
    prefix = f"--{key.group(1)}: " if key else ""
    body = message[key.end() :] if key else message
    lines = [re.sub(r"^- ", "", line.strip()) for line in body.splitlines() if line.strip()]
    if lines and lines[0].startswith("Does not validate against any of the Union subtypes"):
        specific = [line for line in lines if re.search(r"is not accepted|does not conform|Not of type|does not exist", line)]
        if specific:
            return prefix + "; ".join(dict.fromkeys(specific))
        given = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("Given value:")), "?")
        expected = [line for line in lines if line.startswith("Expected a typing.Literal[")]
        choices = [choice for line in expected for choice in re.findall(r"Literal\[([^\]]*)\]", line)]
        if choices:
            return f"{prefix}{given} is not one of {', '.join(choices)}" + (", null" if "NoneType" in body else "")
        return f"{prefix}{lines[0]} (given {given})"
    return prefix + " ".join(lines)


def known_options(parser) -> list[str]:
    """The option names of a parser and of its subcommands' parsers."""
    parsers = [parser, *getattr(getattr(parser, "_subcommands_action", None), "_name_parser_map", {}).values()]
    return [action.dest for each in parsers for action in each._actions if action.dest and action.dest != "help"]


class EmoArgumentParser(LightningArgumentParser):
    """Parse errors as one line, with a suggestion for a misspelt option, instead of the full usage."""

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
        sys.exit(2)


def check_config_files(args: list[str]) -> None:
    """YAML errors with the file, line and column, before jsonargparse reports them without the file."""
    for flag, path in zip(args, args[1:], strict=False):
        if flag in ("--config", "-c") and Path(path).is_file():
            try:
                yaml.safe_load(Path(path).read_text(encoding="utf-8"))
            except yaml.YAMLError as error:
                mark = getattr(error, "problem_mark", None)
                where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else path
                raise UserError(f"{where}: not valid YAML ({getattr(error, 'problem', None) or error})") from None
            except UnicodeDecodeError:
                raise UserError(f"{path}: not a text (UTF-8) file") from None
