"""Images are decoded (Pillow) before they are sent: an animated GIF goes as its first
frame in PNG, and a file that does not decode (a truncated PNG, a PNG header followed by
garbage) gets the unsupported-type note and never reaches the model, while the question
is still answered. On Discord and Slack with the real clients."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from bot.attachments import decode_image
from tests.fakes.discord import FakeDiscord
from tests.fakes.discord.fixtures import answer_to, bot, dc
from tests.fakes.discord.harness import Running
from tests.fakes.mistral import FakeMistral
from tests.fakes.slack.fixtures import fake_slack_fixture, slack_fixture
from tests.fakes.slack.harness import Harness
from tests.fixtures import media

pytestmark = pytest.mark.timeout(60)
__all__ = ["bot", "dc", "fake_slack_fixture", "slack_fixture"]  # fixtures


def sent_images(fake: FakeMistral) -> list[tuple[str, bytes]]:
    """(MIME type, bytes) of each image in the last request's last message."""
    content = fake.requests[-1]["messages"][-1]["content"]
    if isinstance(content, str):
        return []
    found = []
    for part in content:
        if part.get("type") == "image_url":
            head, _, data = part["image_url"].partition(";base64,")
            found.append((head.removeprefix("data:"), base64.b64decode(data)))
    return found


def first_frame_is(data: bytes, color: tuple[int, int, int]) -> bool:
    with Image.open(io.BytesIO(data)) as image:
        frames = getattr(image, "n_frames", 1)
        return frames == 1 and image.convert("RGB").getpixel((0, 0)) == color


def test_decoding_keeps_real_images_and_flattens_animations() -> None:
    png, jpeg = media.png(), media.jpeg()
    assert decode_image(png) == ("image/png", png)  # sent unchanged
    assert decode_image(jpeg) == ("image/jpeg", jpeg)
    gif = decode_image(media.animated_gif(("red", "lime", "blue")))
    assert gif is not None and gif[0] == "image/png" and first_frame_is(gif[1], (255, 0, 0))
    still = Image.new("RGB", (3, 3), "lime").convert("P")
    buffer = io.BytesIO()
    still.save(buffer, "GIF")
    assert decode_image(buffer.getvalue()) == ("image/gif", buffer.getvalue())


def test_files_that_do_not_decode_are_refused() -> None:
    assert decode_image(media.truncated_png()) is None
    assert decode_image(media.garbage_png()) is None
    assert decode_image(b"GIF89a" + b"\x00" * 40) is None
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buffer, "BMP")  # decodes, but not a type the model takes
    assert decode_image(buffer.getvalue()) is None


async def test_discord_animated_gif_and_broken_pngs(
    bot: Running, dc: FakeDiscord, fake_mistral: FakeMistral
) -> None:
    files = [
        ("party.gif", "image/gif", media.animated_gif(("blue", "red"))),
        ("cut.png", "image/png", media.truncated_png()),
        ("junk.png", "image/png", media.garbage_png()),
        ("fine.png", "image/png", media.png("lime")),
    ]
    msg = await dc.user_message(
        dc.general, dc.alice, "what are these?", mention=True, attachments=files
    )
    text = await answer_to(bot, dc, msg)
    notes = [line for line in text.splitlines() if line.startswith("-#")]
    assert notes == [
        "-# cut.png isn't a PNG, JPEG, WebP or GIF image; left out.",
        "-# junk.png isn't a PNG, JPEG, WebP or GIF image; left out.",
    ]
    images = sent_images(fake_mistral)
    assert [mime for mime, _ in images] == ["image/png", "image/png"]
    assert first_frame_is(images[0][1], (0, 0, 255))
    assert images[1][1] == media.png("lime")
    assert "what are these?" in text  # answered


async def test_slack_garbage_png_is_a_note_and_the_gif_is_flattened(
    slack: Harness, fake_mistral: FakeMistral
) -> None:
    junk = slack.fake.add_file("junk.png", "image/png", media.garbage_png())
    gif = slack.fake.add_file("wave.gif", "image/gif", media.animated_gif(("red", "blue")))
    ts = slack.fake.user_message("U1", "D1", "look", files=[junk, gif])
    await slack.reply_in("D1", ts)
    [note, answer] = [m.visible for m in slack.replies("D1", ts)]
    assert note == ":warning: junk.png isn't a PNG, JPEG, WebP or GIF image; left out."
    assert answer.startswith("echo: look")
    [(mime, data)] = sent_images(fake_mistral)
    assert mime == "image/png" and first_frame_is(data, (255, 0, 0))
