"""Commands: declared once in `builtin.py`, dispatched and described by `registry.py`."""

from bot.commands.builtin import REGISTRY
from bot.commands.registry import Call, Command, Kind, Option, Registry, Services, Who

__all__ = ["REGISTRY", "Call", "Command", "Kind", "Option", "Registry", "Services", "Who"]
