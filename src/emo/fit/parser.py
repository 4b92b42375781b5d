"""The Lightning CLI's parser, with emo's one-line errors (`emo.arguments`)."""

from lightning.pytorch.cli import LightningArgumentParser

from emo.arguments import OneLineErrors


class EmoArgumentParser(OneLineErrors, LightningArgumentParser):
    """LightningCLI's parser; a bad option, value or config file is one line, exit status 2."""
