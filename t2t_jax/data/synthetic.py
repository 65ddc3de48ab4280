"""A synthetic music catalog and playlists with a learnable prompt -> tracks signal.

The world: artists, each with a genre and an era, release albums of tracks; every track has a mood
and a Zipf popularity.  Playlists are drawn from a fixed set of latent *intents* (combinations of
genre, mood, activity and era, e.g. {genre: jazz, activity: study}).  A playlist's tracks are
mostly popularity-weighted draws from the tracks that match its intent (an activity matches a set
of moods), plus globally popular tracks and uniform random noise.  Its title and description say
the intent in human ways: templates, synonyms ("70s" / "seventies"), casing, emoji, occasional
typos, sometimes artist names.  So a text model can map prompt words -> intent -> tracks, and
tracks of one intent co-occur (what CF embeddings and semantic IDs pick up).  Each playlist record
keeps its intent ("intent" field) for analysis.

`generate(config, out_dir)` is deterministic in `config.seed` and streams: tracks and playlists are
written as they are drawn; memory holds per-track numpy attributes (a few bytes per track) and the
per-intent pools, never the records.  The dataset dir (catalog.jsonl, playlists.jsonl, splits.json,
meta.json) appears atomically.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np

from t2t_jax import io_utils
from t2t_jax.data import formats
from t2t_jax.errors import UserInputError

# Value -> synonyms used in text.  The first synonym is the canonical name.
GENRES = {
    "rock": ["rock", "rock n roll", "guitar rock", "classic rock"],
    "pop": ["pop", "pop hits", "top 40", "mainstream pop"],
    "hip hop": ["hip hop", "rap", "hiphop", "bars"],
    "jazz": ["jazz", "smooth jazz", "bebop", "jazzy"],
    "classical": ["classical", "orchestral", "piano classics", "symphonic"],
    "electronic": ["electronic", "edm", "techno", "electronica"],
    "country": ["country", "americana", "honky tonk", "nashville"],
    "r&b": ["r&b", "rnb", "rhythm and blues", "neo soul"],
    "metal": ["metal", "heavy metal", "metalcore", "thrash"],
    "folk": ["folk", "acoustic folk", "singer songwriter", "indie folk"],
    "reggae": ["reggae", "dub", "roots reggae", "island"],
    "latin": ["latin", "reggaeton", "salsa", "latino"],
    "blues": ["blues", "delta blues", "bluesy", "chicago blues"],
    "punk": ["punk", "pop punk", "punk rock", "hardcore"],
    "indie": ["indie", "indie rock", "alt", "alternative"],
    "k-pop": ["k-pop", "kpop", "케이팝", "korean pop"],
}
ERAS = {
    "70s": ["70s", "seventies", "1970s", "'70s"],
    "80s": ["80s", "eighties", "1980s", "'80s"],
    "90s": ["90s", "nineties", "1990s", "'90s"],
    "2000s": ["2000s", "00s", "noughties", "y2k"],
    "2010s": ["2010s", "10s", "twenty tens", "2010s era"],
    "2020s": ["2020s", "new", "fresh", "current"],
}
MOODS = {
    "happy": ["happy", "feel good", "upbeat", "sunny"],
    "sad": ["sad", "heartbreak", "melancholy", "crying"],
    "chill": ["chill", "relaxing", "mellow", "laid back"],
    "energetic": ["energetic", "hype", "pump up", "high energy"],
    "romantic": ["romantic", "love songs", "date night", "lovey"],
    "angry": ["angry", "rage", "aggressive", "furious"],
    "dreamy": ["dreamy", "ethereal", "hazy", "floaty"],
    "dark": ["dark", "moody", "brooding", "gloomy"],
}
# Activity -> (synonyms, moods that suit it).
ACTIVITIES = {
    "workout": (["workout", "gym", "lifting", "training"], ("energetic", "angry", "happy")),
    "study": (["study", "studying", "homework", "focus"], ("chill", "dreamy")),
    "party": (["party", "pregame", "dance party", "friday night"], ("happy", "energetic")),
    "sleep": (["sleep", "bedtime", "falling asleep", "night time"], ("chill", "dreamy", "sad")),
    "road trip": (["road trip", "driving", "car rides", "highway"], ("happy", "energetic", "chill")),
    "running": (["running", "jogging", "cardio", "5k"], ("energetic", "happy")),
    "cooking": (["cooking", "kitchen", "dinner", "sunday brunch"], ("happy", "chill", "romantic")),
    "rainy day": (["rainy day", "rain", "cozy", "grey skies"], ("sad", "chill", "dreamy", "dark")),
}
EMOJI = {
    "rock": "🎸", "pop": "🎤", "hip hop": "🔥", "jazz": "🎷", "classical": "🎻", "electronic": "🎧",
    "country": "🤠", "r&b": "💜", "metal": "🤘", "folk": "🪕", "reggae": "🌴", "latin": "💃",
    "blues": "🎺", "punk": "⚡", "indie": "🌙", "k-pop": "🇰🇷", "happy": "😊", "sad": "😢",
    "chill": "😌", "energetic": "⚡", "romantic": "❤️", "angry": "😤", "dreamy": "☁️", "dark": "🖤",
    "workout": "💪", "study": "📚", "party": "🎉", "sleep": "😴", "road trip": "🚗", "running": "🏃",
    "cooking": "🍳", "rainy day": "🌧️",
}
FIELDS = ("genre", "mood", "activity", "era")
# Intent patterns (sorted field tuples) and their title templates: g genre, m mood, a activity, e era.
TITLE_TEMPLATES = {
    ("genre",): ["{g}", "{g} hits", "best of {g}", "my {g}", "{g} playlist", "{g} favs"],
    ("mood",): ["{m}", "{m} songs", "{m} vibes", "feeling {m}"],
    ("activity",): ["{a}", "{a} music", "songs for {a}", "{a} playlist", "{a} jams"],
    ("era",): ["{e}", "{e} hits", "best of the {e}", "{e} throwbacks"],
    ("genre", "mood"): ["{m} {g}", "{g} but {m}", "{m} {g} vibes", "{g} ({m})"],
    ("era", "genre"): ["{e} {g}", "{g} from the {e}", "classic {e} {g}", "{g} {e}"],
    ("activity", "genre"): ["{g} for {a}", "{a} {g}", "{g} {a} mix", "{a} with {g}"],
    ("era", "mood"): ["{m} {e}", "{e} {m} songs", "{m} {e} throwbacks"],
    ("activity", "mood"): ["{m} {a}", "{a} - {m} vibes", "{m} songs for {a}"],
    ("era", "genre", "mood"): ["{m} {e} {g}", "{e} {g}, {m}", "{m} {g} from the {e}"],
}
PATTERNS = list(TITLE_TEMPLATES)
DESCRIPTION_TEMPLATES = [
    "{phrase}",
    "a mix of {phrase}",
    "my favorite {phrase} songs",
    "all the {phrase} you need",
    "{phrase}, updated weekly",
    "just {phrase}. enjoy",
    "the ultimate {phrase} collection",
]
_SYLLABLES = ("ka", "lo", "mi", "ra", "ne", "to", "vi", "sa", "du", "re", "jo", "la", "ben", "tor",
              "mar", "el", "an", "zu", "ki", "po", "shi", "va", "ron", "del", "fi", "go", "ha", "wen")
_WORDS = ("night", "love", "fire", "heart", "summer", "river", "gold", "light", "city", "dream",
          "rain", "home", "road", "blue", "wild", "song", "stars", "ocean", "shadow", "forever",
          "dance", "echo", "glass", "paper", "electric", "velvet", "morning", "winter", "midnight",
          "silver", "ghost", "sugar", "thunder", "garden", "mirror", "neon", "storm", "honey")
_NON_LATIN = ("ミドリ", "さくら", "Звезда", "Ночь", "별빛", "하늘", "قمر", "光", "月亮", "Άστρο")


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
  """Sizes and noise of the synthetic world.  Defaults fit a 10-minute CPU quickstart."""
  seed: int = 0
  num_artists: int = 300
  num_tracks: int = 3000
  num_playlists: int = 5000
  num_intents: int = 150
  min_playlist_len: int = 10
  max_playlist_len: int = 40
  zipf_exponent: float = 1.0          # track popularity ~ 1 / rank**exponent
  intent_zipf_exponent: float = 0.6   # how unevenly intents are used by playlists
  popular_noise: float = 0.10         # share of a playlist drawn from globally popular tracks
  random_noise: float = 0.05          # share drawn uniformly from the catalog
  min_pool_size: int = 15             # intents matching fewer tracks are redrawn
  description_prob: float = 0.7       # playlists with a non-empty description
  artist_mention_prob: float = 0.25   # descriptions naming artists
  emoji_prob: float = 0.2
  typo_prob: float = 0.08
  non_latin_artist_prob: float = 0.05
  validation_fraction: float = 0.05
  test_fraction: float = 0.05

  def validate(self) -> None:
    if self.num_artists < 1 or self.num_tracks < 1 or self.num_playlists < 1 or self.num_intents < 1:
      raise UserInputError(f"SyntheticConfig: sizes must be >= 1, got {self}")
    if not 1 <= self.min_playlist_len <= self.max_playlist_len:
      raise UserInputError(
          f"SyntheticConfig: need 1 <= min_playlist_len <= max_playlist_len, got "
          f"{self.min_playlist_len}, {self.max_playlist_len}")
    if self.max_playlist_len > self.num_tracks:
      raise UserInputError(
          f"SyntheticConfig: max_playlist_len={self.max_playlist_len} exceeds num_tracks={self.num_tracks}")
    for name in ("popular_noise", "random_noise", "description_prob", "artist_mention_prob",
                 "emoji_prob", "typo_prob", "non_latin_artist_prob"):
      v = getattr(self, name)
      if not 0.0 <= v <= 1.0:
        raise UserInputError(f"SyntheticConfig.{name} must be in [0, 1], got {v}")
    if self.popular_noise + self.random_noise >= 1.0:
      raise UserInputError("SyntheticConfig: popular_noise + random_noise must be < 1")


def _name(rng: np.random.Generator, min_syl: int = 2, max_syl: int = 3) -> str:
  n = int(rng.integers(min_syl, max_syl + 1))
  return "".join(_SYLLABLES[int(i)] for i in rng.integers(len(_SYLLABLES), size=n)).capitalize()


def _artist_name(rng: np.random.Generator, non_latin_prob: float) -> str:
  u = rng.random()
  if u < non_latin_prob:
    return str(_NON_LATIN[int(rng.integers(len(_NON_LATIN)))]) + " " + _name(rng, 1, 2)
  if u < 0.25:
    return "The " + _WORDS[int(rng.integers(len(_WORDS)))].capitalize() + "s"
  if u < 0.6:
    return _name(rng) + " " + _name(rng)
  return _name(rng)


def _phrase(rng: np.random.Generator) -> str:
  n = int(rng.integers(1, 4))
  words = [_WORDS[int(i)] for i in rng.integers(len(_WORDS), size=n)]
  if rng.random() < 0.3:
    words.append(_name(rng, 1, 2).lower())
  return " ".join(words).title()


class _World:
  """Per-track attributes as numpy arrays (no strings), plus artist and album names."""

  def __init__(self, cfg: SyntheticConfig):
    rng = np.random.default_rng([cfg.seed, 1])
    self.genres = list(GENRES)
    self.eras = list(ERAS)
    self.moods = list(MOODS)
    self.activities = list(ACTIVITIES)
    n_a, n_t = cfg.num_artists, cfg.num_tracks
    self.artist_genre = rng.integers(len(self.genres), size=n_a).astype(np.int16)
    self.artist_era = rng.integers(len(self.eras), size=n_a).astype(np.int16)
    self.artist_names = [_artist_name(rng, cfg.non_latin_artist_prob) for _ in range(n_a)]
    self.artist_albums = rng.integers(1, 5, size=n_a)
    self.album_names = [[_phrase(rng) for _ in range(k)] for k in self.artist_albums]
    # Prolific and quiet artists: track -> artist by a skewed draw; every artist gets one track first.
    artist_w = rng.gamma(0.7, size=n_a)
    artist_w /= artist_w.sum()
    first = np.arange(min(n_a, n_t))
    rest = rng.choice(n_a, size=n_t - first.size, p=artist_w)
    self.track_artist = rng.permutation(np.concatenate([first, rest])).astype(np.int32)
    # Moods depend on genre: each genre has its own mood distribution.
    genre_mood_p = rng.dirichlet(np.full(len(self.moods), 0.6), size=len(self.genres))
    g = self.artist_genre[self.track_artist]
    u = rng.random(n_t)[:, None]
    self.track_mood = (u > np.cumsum(genre_mood_p[g], axis=1)).sum(axis=1).astype(np.int16)
    self.track_mood = np.minimum(self.track_mood, len(self.moods) - 1)
    self.track_genre = g
    self.track_era = self.artist_era[self.track_artist]
    ranks = rng.permutation(n_t) + 1
    pop = 1.0 / ranks.astype(np.float64) ** cfg.zipf_exponent
    self.popularity = pop / pop.sum()
    self.track_album = (rng.random(n_t) * self.artist_albums[self.track_artist]).astype(np.int32)
    self.title_seed = rng.integers(2**31, size=n_t)

  def mask(self, intent: dict[str, str]) -> np.ndarray:
    m = np.ones(self.track_genre.shape, bool)
    if "genre" in intent:
      m &= self.track_genre == self.genres.index(intent["genre"])
    if "era" in intent:
      m &= self.track_era == self.eras.index(intent["era"])
    if "mood" in intent:
      m &= self.track_mood == self.moods.index(intent["mood"])
    if "activity" in intent:
      ok = [self.moods.index(x) for x in ACTIVITIES[intent["activity"]][1]]
      m &= np.isin(self.track_mood, ok)
    return m

  def track(self, i: int) -> formats.Track:
    rng = np.random.default_rng(int(self.title_seed[i]))
    a = int(self.track_artist[i])
    tags = (self.genres[self.track_genre[i]], self.eras[self.track_era[i]], self.moods[self.track_mood[i]])
    return formats.Track(track_id=track_id(i), artist=self.artist_names[a], title=_phrase(rng),
                         album=self.album_names[a][int(self.track_album[i])], tags=tags)


def track_id(i: int) -> str:
  return f"trk{i:07d}"


def playlist_id(i: int) -> str:
  return f"pl{i:07d}"


def _draw_intents(cfg: SyntheticConfig, world: _World, rng: np.random.Generator):
  """Draws `num_intents` distinct intents whose pools hold at least `min_pool_size` tracks."""
  intents, pools, seen = [], [], set()
  values = {"genre": world.genres, "mood": world.moods, "activity": world.activities, "era": world.eras}
  min_pool = min(cfg.min_pool_size, cfg.num_tracks)
  for _ in range(cfg.num_intents * 50):
    if len(intents) == cfg.num_intents:
      break
    pattern = PATTERNS[int(rng.integers(len(PATTERNS)))]
    intent = {f: values[f][int(rng.integers(len(values[f])))] for f in pattern}
    key = tuple(sorted(intent.items()))
    if key in seen:
      continue
    pool = np.flatnonzero(world.mask(intent))
    if pool.size < min_pool:
      continue
    seen.add(key)
    intents.append(intent)
    pools.append(pool.astype(np.int32))
  if not intents:
    raise UserInputError(f"SyntheticConfig: no intent matches {min_pool} tracks; raise num_tracks ({cfg})")
  return intents, pools


def _typo(text: str, rng: np.random.Generator) -> str:
  words = text.split(" ")
  long_words = [i for i, w in enumerate(words) if len(w) >= 4 and w.isalpha()]
  if not long_words:
    return text
  i = long_words[int(rng.integers(len(long_words)))]
  w = words[i]
  j = int(rng.integers(1, len(w) - 1))
  kind = int(rng.integers(3))
  if kind == 0:
    w = w[:j] + w[j + 1] + w[j] + w[j + 2:]
  elif kind == 1:
    w = w[:j] + w[j + 1:]
  else:
    w = w[:j] + w[j] + w[j:]
  words[i] = w
  return " ".join(words)


def _case(text: str, rng: np.random.Generator) -> str:
  u = rng.random()
  if u < 0.5:
    return text.lower()
  if u < 0.75:
    return text.title()
  if u < 0.85:
    return text.upper()
  return text


def _synonyms(intent: dict[str, str], rng: np.random.Generator) -> dict[str, str]:
  pick = lambda xs: xs[int(rng.integers(len(xs)))]
  out = {}
  if "genre" in intent:
    out["g"] = pick(GENRES[intent["genre"]])
  if "mood" in intent:
    out["m"] = pick(MOODS[intent["mood"]])
  if "activity" in intent:
    out["a"] = pick(ACTIVITIES[intent["activity"]][0])
  if "era" in intent:
    out["e"] = pick(ERAS[intent["era"]])
  return out


def _title(intent: dict[str, str], cfg: SyntheticConfig, rng: np.random.Generator) -> str:
  pattern = tuple(sorted(intent))
  templates = TITLE_TEMPLATES[pattern]
  text = templates[int(rng.integers(len(templates)))].format(**_synonyms(intent, rng))
  if rng.random() < cfg.typo_prob:
    text = _typo(text, rng)
  text = _case(text, rng)
  emoji = [EMOJI[v] for v in intent.values() if v in EMOJI]
  if emoji and rng.random() < cfg.emoji_prob:
    text = text + " " + emoji[int(rng.integers(len(emoji)))]
  return text


def _description(intent: dict[str, str], artists: list[str], cfg: SyntheticConfig,
                 rng: np.random.Generator) -> str:
  if rng.random() >= cfg.description_prob:
    return ""
  syn = _synonyms(intent, rng)
  parts = [syn[k] for k in ("m", "e", "g") if k in syn]
  phrase = " ".join(parts)
  if "a" in syn:
    phrase = (phrase + " for " + syn["a"]) if phrase else ("songs for " + syn["a"])
  text = DESCRIPTION_TEMPLATES[int(rng.integers(len(DESCRIPTION_TEMPLATES)))].format(phrase=phrase)
  if artists and rng.random() < cfg.artist_mention_prob:
    text += " feat. " + " and ".join(artists)
  if rng.random() < cfg.emoji_prob:
    text += " " + "".join(EMOJI.get(v, "🎶") for v in intent.values())
  if rng.random() < cfg.typo_prob:
    text = _typo(text, rng)
  return text if rng.random() < 0.5 else text.capitalize()


def generate(config: SyntheticConfig, out_dir: str | os.PathLike, *, overwrite: bool = False) -> dict[str, Any]:
  """Writes a synthetic dataset dir (catalog.jsonl, playlists.jsonl, splits.json, meta.json).

  Deterministic in `config.seed`; streams records; the dir appears atomically.  Returns meta.
  """
  cfg = config
  cfg.validate()
  world = _World(cfg)
  rng = np.random.default_rng([cfg.seed, 2])
  intents, pools = _draw_intents(cfg, world, rng)
  intent_w = 1.0 / np.arange(1, len(intents) + 1, dtype=np.float64) ** cfg.intent_zipf_exponent
  intent_w /= intent_w.sum()
  # Cumulative popularity for fast popular-noise draws (rng.choice with p is O(N) per call).
  cum_pop = np.cumsum(world.popularity)
  cum_intent_w = np.cumsum(intent_w)

  def tracks():
    for i in range(cfg.num_tracks):
      yield world.track(i)

  n_playlist_tracks = 0

  def playlists():
    nonlocal n_playlist_tracks
    for i in range(cfg.num_playlists):
      k = int(np.searchsorted(cum_intent_w, rng.random()))
      k = min(k, len(intents) - 1)
      intent = intents[k]
      n = int(rng.integers(cfg.min_playlist_len, cfg.max_playlist_len + 1))
      rows = _draw_tracks(pools[k], n, world, cum_pop, cfg, rng)
      top = pools[k][np.argsort(-world.popularity[pools[k]])[:5]]
      n_art = int(rng.integers(1, 3))
      artists = list(dict.fromkeys(world.artist_names[world.track_artist[t]]
                                   for t in rng.choice(top, size=min(n_art, top.size), replace=False)))
      n_playlist_tracks += len(rows)
      yield formats.Playlist(
          playlist_id=playlist_id(i), title=_title(intent, cfg, rng),
          description=_description(intent, artists, cfg, rng),
          track_ids=tuple(track_id(int(t)) for t in rows), intent=dict(intent, intent_id=k))

  splits = formats.make_splits([playlist_id(i) for i in range(cfg.num_playlists)], seed=cfg.seed,
                               validation_fraction=cfg.validation_fraction, test_fraction=cfg.test_fraction)
  meta: dict[str, Any] = {"source": "synthetic", "config": dataclasses.asdict(cfg)}
  with io_utils.atomic_dir(out_dir, kind="dataset", overwrite=overwrite) as tmp:
    n_tracks = formats.write_catalog(os.path.join(tmp, formats.CATALOG_FILE), tracks())
    n_playlists = formats.write_playlists(os.path.join(tmp, formats.PLAYLISTS_FILE), playlists())
    formats.write_splits(os.path.join(tmp, formats.SPLITS_FILE), splits)
    meta.update({
        "num_tracks": n_tracks, "num_playlists": n_playlists, "num_playlist_tracks": n_playlist_tracks,
        "split_sizes": {k: len(v) for k, v in splits.items()},
        "intents": [dict(it, intent_id=k, pool_size=int(p.size), weight=float(w))
                    for k, (it, p, w) in enumerate(zip(intents, pools, intent_w))],
    })
    io_utils.write_json(os.path.join(tmp, formats.META_FILE), meta)
  return meta


def _draw_tracks(pool, n, world, cum_pop, cfg, rng) -> np.ndarray:
  """Distinct track rows: intent draws (popularity-weighted), popular noise, uniform noise.

  Intent draws use Gumbel top-k (weighted sampling without replacement in one vectorised step);
  popular noise is an inverse-CDF draw on the cumulative popularity (O(log N) per track).
  """
  n_pop = int(rng.binomial(n, cfg.popular_noise))
  n_rand = int(rng.binomial(n - n_pop, cfg.random_noise / max(1e-9, 1 - cfg.popular_noise)))
  n_intent = min(n - n_pop - n_rand, pool.size)
  keys = np.log(world.popularity[pool]) - np.log(-np.log(rng.random(pool.size)))
  chosen = pool[np.argpartition(-keys, n_intent - 1)[:n_intent]].tolist() if n_intent else []
  taken = set(chosen)
  out = list(chosen)
  n_tracks = cum_pop.size
  budget = 50 * n + 100
  while len(out) < n and budget > 0:
    budget -= 1
    if len(out) < n_intent + n_pop:
      t = int(min(np.searchsorted(cum_pop, rng.random() * cum_pop[-1]), n_tracks - 1))
    else:
      t = int(rng.integers(n_tracks))
    if t not in taken:
      taken.add(t)
      out.append(t)
  arr = np.asarray(out, np.int64)
  return arr[rng.permutation(arr.size)]
