"""A loopback fake of Slack (Web API, Socket Mode, signed HTTP events) for tests and bench."""

from tests.fakes.slack.delivery import post_signed, sign
from tests.fakes.slack.records import Posted
from tests.fakes.slack.server import FakeSlack

__all__ = ["FakeSlack", "Posted", "post_signed", "sign"]
