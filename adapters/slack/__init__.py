"""The Slack adapter: slack-bolt in, engine replies out."""

from adapters.slack.adapter import SlackAdapter

__all__ = ["SlackAdapter"]
