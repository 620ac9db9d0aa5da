"""`teambot check` and `teambot chat` per provider: which one, its token counter and what
works, through the real command line against each provider's loopback fake."""

from __future__ import annotations

from pathlib import Path

from tests.fakes.mistral import Reply
from tests.fakes.openai_compat import FakeOpenAI
from tests.fakes.puter import FakePuter
from tests.test_cli import cli_env, teambot


def provider_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = cli_env(None, tmp_path, **extra)
    del env["MISTRAL_API_KEY"]  # not needed by the other providers
    return {k: v for k, v in env.items() if not k.startswith("PUTER_")} | extra


async def test_check_names_an_openai_server_its_flavor_and_features(tmp_path: Path) -> None:
    async with FakeOpenAI("llamacpp", api_key="local-secret-key-42") as fake:
        env = provider_env(
            tmp_path,
            TEAMBOT_PROVIDER="openai",
            TEAMBOT_API_BASE_URL=fake.base_url,
            TEAMBOT_API_KEY="local-secret-key-42",
        )
        code, out, err = await teambot("check", env=env, cwd=tmp_path)
    assert code == 0, out + err
    assert f"✓ provider: openai at {fake.base_url} (llamacpp)" in out
    assert "✓ token counter: Tekken (Mistral's tokenizer)" in out
    assert "chat_template_kwargs.reasoning_effort" in out and "stream_options.include_usage" in out
    assert "✓ model: mistral-small-2603 answered" in out
    assert "local-secret-key-42" not in out + err


async def test_check_and_chat_on_puter(tmp_path: Path) -> None:
    async with FakePuter() as fake:
        env = provider_env(
            tmp_path,
            TEAMBOT_PROVIDER="puter",
            PUTER_AUTH_TOKEN=fake.token,
            PUTER_API_URL=fake.base_url,
        )
        code, out, err = await teambot("check", env=env, cwd=tmp_path)
        assert code == 0, out + err
        assert f"✓ provider: puter at {fake.base_url}" in out
        assert "- reasoning: not supported" in out and "✓ tool calls" in out
        fake.enqueue(Reply("Hi from Puter."))
        code, out, err = await teambot("chat", env=env, cwd=tmp_path, stdin="hello\n")
    assert code == 0, err
    assert "Hi from Puter." in out and fake.token not in out + err


async def test_missing_provider_settings_are_one_line(tmp_path: Path) -> None:
    env = provider_env(tmp_path, TEAMBOT_PROVIDER="puter")
    code, _, err = await teambot("check", env=env, cwd=tmp_path)
    assert code == 2 and err.count("\n") == 1 and "PUTER_AUTH_TOKEN" in err
    env = provider_env(tmp_path, TEAMBOT_PROVIDER="openai")
    code, _, err = await teambot("chat", env=env, cwd=tmp_path)
    assert code == 2 and err.count("\n") == 1 and "TEAMBOT_API_BASE_URL" in err


async def test_check_on_a_non_mistral_model_says_tekken_only_estimates(tmp_path: Path) -> None:
    async with FakeOpenAI("vllm") as fake:
        env = provider_env(
            tmp_path,
            TEAMBOT_PROVIDER="openai",
            TEAMBOT_API_BASE_URL=fake.base_url,
            TEAMBOT_MODEL="Qwen/Qwen3-8B",
        )
        code, out, err = await teambot("check", env=env, cwd=tmp_path)
    assert code == 0, out + err
    assert "Tekken as an estimate (Qwen/Qwen3-8B is not a Mistral model)" in out
    assert "top-level reasoning_effort" in out and "(vllm)" in out
