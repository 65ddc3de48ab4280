"""Tests for t2t_jax.data.prompts: fields, normalisation, empty and overlong prompts, templates."""

import numpy as np
import pytest

from t2t_jax.data import formats, prompts
from t2t_jax.errors import UserInputError


def _pl(title, description=""):
  return formats.Playlist("p7", title, description, ("t1",))


def test_fields():
  p = _pl("Chill Vibes", "for  studying")
  assert prompts.make_prompt(p, "title") == "Chill Vibes"
  assert prompts.make_prompt(p, "description") == "for studying"
  assert prompts.make_prompt(p, "both") == "Chill Vibes | for studying"
  assert prompts.make_prompt(_pl("Chill"), "description") == "Chill"  # falls back to the title
  assert prompts.make_prompt(_pl("Chill"), "both") == "Chill"
  assert prompts.make_prompt(_pl("", "only desc"), "both") == "only desc"
  with pytest.raises(UserInputError, match="prompt field"):
    prompts.make_prompt(p, "name")


def test_normalisation_keeps_emoji_and_scripts():
  assert prompts.normalize_text("  ｆｕｌｌ\u3000width\t\n tabs ") == "full width tabs"
  assert prompts.normalize_text("ﬁne ①") == "fine 1"  # NFKC
  assert prompts.normalize_text("케이팝 💃 Звезда 👨‍👩‍👧") == "케이팝 💃 Звезда 👨‍👩‍👧"  # ZWJ kept
  assert prompts.normalize_text("a\x00b\u200bc") == "abc"  # control / zero-width removed
  assert prompts.normalize_text("Rock N ROLL!!") == "Rock N ROLL!!"  # case and punctuation kept


def test_empty_prompt_names_playlist():
  with pytest.raises(UserInputError, match="playlist 'p7': empty prompt"):
    prompts.make_prompt(_pl("   \u200b ", " "), "both")
  with pytest.raises(UserInputError, match="empty prompt"):
    prompts.normalize_prompt("\n\t")


def test_lone_surrogate_is_not_valid_text():
  """Issue 23: a prompt of a lone surrogate (a "\\ud800" JSON escape) was called "empty prompt"."""
  with pytest.raises(UserInputError, match=r"^prompt is not valid text: lone surrogate '\\ud800' at position 0"):
    prompts.normalize_prompt("\ud800")
  with pytest.raises(UserInputError, match=r"lone surrogate '\\udce9' at position 5"):
    prompts.normalize_prompt("rock \udce9 roll")


def test_overlong():
  long = " ".join(["word"] * 300)  # 1499 chars
  out = prompts.make_prompt(_pl(long), "title", max_chars=100)
  assert len(out) <= 100 and out.endswith("word") and out == " ".join(["word"] * 20)
  assert prompts.truncate("x" * 50, 10) == "x" * 10  # no space: hard cut
  with pytest.raises(UserInputError, match="prompt is 1499 characters"):
    prompts.make_prompt(_pl(long), "title", max_chars=100, on_overlong="raise")


def test_augment_prompt_deterministic():
  a = [prompts.augment_prompt("jazz", np.random.default_rng(0)) for _ in range(3)]
  b = [prompts.augment_prompt("jazz", np.random.default_rng(0)) for _ in range(3)]
  assert a == b and all("jazz" in x for x in a)
  rng = np.random.default_rng(1)
  outs = {prompts.augment_prompt("jazz", rng) for _ in range(50)}
  assert outs == {t.format(prompt="jazz") for t in prompts.PROMPT_TEMPLATES}


@pytest.mark.parametrize("raw, clean", [
    ('Songs by <a href="spotify:artist:1">Drake</a>, <b>SZA</b> &amp; more. Cover: Dua &#x2F; Lipa',
     "Songs by Drake, SZA & more. Cover: Dua / Lipa"),
    ("line<br/>two<p>three</p>four", "line two three four"),
    ("I <3 you & R&B < 5 > 3", "I <3 you & R&B < 5 > 3"),
    ("&lt;i&gt;escaped&lt;/i&gt; markup", "escaped markup"),
    ("<MISSING>", ""), ("  <missing> ", ""), ("", ""),
])
def test_clean_text(raw, clean):
  assert prompts.normalize_text(prompts.clean_text(raw)) == clean


def test_prompt_cleans_each_field():
  p = formats.Playlist("p7", "<MISSING>", "Chill <i>vibes</i> &amp; more", ("t1",))
  assert prompts.make_prompt(p, "both") == "Chill vibes & more"
  assert prompts.make_prompt(p, "description") == "Chill vibes & more"
  with pytest.raises(UserInputError, match="empty prompt"):
    prompts.make_prompt(p, "title")
