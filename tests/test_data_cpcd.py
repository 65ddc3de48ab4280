"""Tests for t2t_jax.data.cpcd on the CPCD slice in tests/data/cpcd (37 + 10 conversations)."""

import collections
import json
import os
import re

import pytest

from t2t_jax import cli
from t2t_jax.data import cpcd, english, entity_check, finish, formats, vocab
from t2t_jax.errors import UserInputError

CPCD_DIR = os.path.join(os.path.dirname(__file__), "data", "cpcd")


def _raw(name):
  with open(os.path.join(CPCD_DIR, name), encoding="utf-8") as f:
    return [json.loads(line) for line in f]


RAW_TRAIN, RAW_VAL = _raw(cpcd.TRAIN_FILE), _raw(cpcd.VAL_FILE)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
  out = tmp_path_factory.mktemp("cpcd") / "asw"
  meta = cpcd.convert_cpcd(CPCD_DIR, out, vocab_size=600)
  return str(out), meta


@pytest.fixture(scope="module")
def masked(tmp_path_factory):
  out = tmp_path_factory.mktemp("cpcd") / "masked"
  meta = cpcd.convert_cpcd(CPCD_DIR, out, artists="masked", vocab_size=600)
  return str(out), meta


def _titles(out):
  return {p.playlist_id: p.title for p in formats.read_playlists(os.path.join(out, "playlists.jsonl"))}


def test_dedup_and_catalog(converted):
  out, meta = converted
  assert (meta["video_ids"], meta["songs"], meta["video_ids_merged"]) == (1022, 1010, 12)
  assert meta["goal_duplicates_merged"] == 4 and meta["conversations_without_goal"] == 2
  aliases = json.load(open(os.path.join(out, "track_aliases.json"), encoding="utf-8"))
  assert len(aliases) == 12 and aliases["3mwiO5st-us"] == "2ulp_AMut14"
  assert all(min(alias, song) == song for alias, song in aliases.items())  # smallest video id wins
  ds = formats.Dataset.load(out)
  catalog = {t.track_id: t for t in ds.tracks}
  assert catalog["2ulp_AMut14"] == formats.Track("2ulp_AMut14", "Kanye West", "Stronger", "Graduation")
  assert "3mwiO5st-us" not in catalog and set(aliases.values()) <= set(catalog)
  # The catalog is every track any conversation gives metadata for, merged by song.
  referenced = {v for c in RAW_TRAIN + RAW_VAL for v in c["tracks"]}
  assert set(catalog) == {aliases.get(v, v) for v in referenced}
  assert len(ds.tracks) == meta["num_tracks"] == 1010
  multi = [t for t in ds.tracks if t.title == "Patiently Waiting"]
  assert [t.artist for t in multi] == ["50 Cent, Eminem"]


def test_playlists_and_prompts(converted):
  out, meta = converted
  ds = formats.Dataset.load(out)
  playlists = {p.playlist_id: p for p in ds.playlists()}
  raw = {c["id"]: c for c in RAW_TRAIN + RAW_VAL}
  assert set(playlists) == {i for i, c in raw.items() if c["goal_playlist"]} and len(playlists) == 45
  aliases = json.load(open(os.path.join(out, "track_aliases.json"), encoding="utf-8"))
  for pid, p in playlists.items():
    turns = [re.sub(r"\s+", " ", t["user_query"]).strip() for t in raw[pid]["turns"]]
    assert p.title == " ".join(t for t in turns if t) and p.description == ""
    assert list(p.track_ids) == list(dict.fromkeys(aliases.get(v, v) for v in raw[pid]["goal_playlist"]))
  assert meta["prompt_max_chars"] == 2048
  assert meta["prompt_stats"]["chars"]["max"] == max(len(p.title) for p in playlists.values())
  assert meta["prompt_stats"]["over_max_chars"] == 0 and meta["prompt_stats"]["tokens"]["p50"] > 10


def test_splits_folds_and_vocab(converted):
  out, meta = converted
  splits = formats.read_splits(os.path.join(out, "splits.json"))
  kept_train = {c["id"] for c in RAW_TRAIN if c["goal_playlist"]}
  assert splits["test"] == sorted(c["id"] for c in RAW_VAL)
  assert set(splits["train"]) | set(splits["validation"]) == kept_train
  assert len(splits["validation"]) == 20 and len(splits["train"]) == 15  # max(10%, 20) of 35
  assert not set(splits["train"]) & set(splits["validation"])
  folds = formats.read_folds(os.path.join(out, "folds.json"))
  assert folds["num_folds"] == 5 and [len(f) for f in folds["folds"]] == [9] * 5
  assert sorted(i for f in folds["folds"] for i in f) == sorted(kept_train | set(splits["test"]))
  for k in range(5):
    s = formats.fold_splits(out, k)
    assert s["test"] == folds["folds"][k] and not (set(s["train"]) & set(s["test"]))
  assert meta["vocab"]["trained_on"] == {"train_prompts": 15, "tracks": 1010}
  sp = vocab.load_sentencepiece(os.path.join(out, "vocab", "spm.model"))
  assert sp.GetPieceSize() == meta["vocab"]["size"] == 600
  again = cpcd.convert_cpcd(CPCD_DIR, out, vocab_size=600, seed=1)  # replaces its own output
  assert again["split_sizes"] == meta["split_sizes"]
  assert formats.read_splits(os.path.join(out, "splits.json"))["validation"] != splits["validation"]
  cpcd.convert_cpcd(CPCD_DIR, out, vocab_size=600)


def _maskable_names(out):
  ds = formats.Dataset.load(out)
  names = set()
  for t in ds.tracks:
    for a in re.split(r",\s*", t.artist):
      names.add(a.strip())
  keep = set()
  for n in names:
    words = [w.lower() for w in re.findall(r"\w+", n)]
    documented_exception = (len(n) < 3 or not any(c.isalpha() for c in n) or not re.match(r"\w", n)
                            or (len(words) <= 2 and all(w in english.COMMON_WORDS for w in words)))
    if not documented_exception:
      keep.add(n)
  return keep


def test_masked_prompts_have_no_artist_names(converted, masked):
  out, meta = masked
  names = _maskable_names(out)
  assert len(names) > 400
  before, after = _titles(converted[0]), _titles(out)
  assert before.keys() == after.keys()
  found_before = 0
  for name in names:
    pattern = re.compile(r"(?<!\w)" + re.escape(name) + r"(?!\w)", re.IGNORECASE)
    found_before += sum(bool(pattern.search(t)) for t in before.values())
    hits = [t for t in after.values() if pattern.search(t)]
    assert not hits, (name, hits[:1])
  assert found_before > 20
  m = meta["masking"]
  assert m["replacements"] == meta["masked_replacements"] > found_before // 2
  assert 0 < m["prompts_changed"] <= 47 and m["names_skipped"]["common_words"] > 0
  assert sum(t != after[k] for k, t in before.items()) > 20
  assert all(len(t) <= len(before[k]) for k, t in after.items())


def test_artist_masker_rule():
  m = cpcd.ArtistMasker(["Beyoncé", "Earth, Wind & Fire", "Yes", "Kanye West", "AC/DC", "The Beatles", "U2",
                         "Green Day", "Obie Trice feat. 50 Cent", "112"])
  text, n = m.mask("I love Beyonce's songs, earth, wind & fire, YES and U2, beatles and The Beatles, "
                   "AC/DC, acdc, green day, Obie Trice, 112 and Kanye Westside")
  assert text == ("I love songs, , YES and U2, and , , acdc, green day, , 112 and Kanye Westside")
  assert n == 6
  assert m.skipped["shorter_than_3"] >= 1 and m.skipped["common_words"] >= 2 and m.skipped["no_letter"] == 1


def test_first_turn_prompt(tmp_path):
  meta = cpcd.convert_cpcd(CPCD_DIR, tmp_path / "ft", prompt="first_turn", vocab_size=None, num_folds=3)
  titles = _titles(str(tmp_path / "ft"))
  first = RAW_TRAIN[0]
  assert titles[first["id"]] == re.sub(r"\s+", " ", first["turns"][0]["user_query"]).strip()
  assert meta["vocab"] is None and meta["prompt"] == "first_turn"
  assert len(formats.read_folds(tmp_path / "ft" / "folds.json")["folds"]) == 3


def test_materialize_fold(converted, tmp_path):
  out, _ = converted
  meta = finish.materialize_fold(out, 2, tmp_path / "fold2")
  fold_dir = tmp_path / "fold2"
  ds = formats.Dataset.load(fold_dir)
  assert ds.split_ids("test") == formats.read_folds(os.path.join(out, "folds.json"))["folds"][2]
  assert ds.splits == formats.fold_splits(out, 2)
  assert (fold_dir / "catalog.jsonl").read_bytes() == open(os.path.join(out, "catalog.jsonl"), "rb").read()
  assert (fold_dir / "track_aliases.json").exists() and (fold_dir / "vocab" / "spm.model").exists()
  # The vocabulary is retrained on this fold's training prompts only.
  assert meta["vocab"]["trained_on"]["train_prompts"] == len(ds.split_ids("train"))
  assert meta["fold"] == 2 and meta["source"] == "cpcd" and meta["prompt_max_chars"] == 2048
  with pytest.raises(UserInputError, match="overlaps the input"):
    finish.materialize_fold(out, 0, os.path.join(out, "inner"))


def test_bad_cpcd_input_names_file_and_line(tmp_path):
  src = tmp_path / "src"
  src.mkdir()
  lines = open(os.path.join(CPCD_DIR, cpcd.TRAIN_FILE), encoding="utf-8").read().splitlines()
  rec = json.loads(lines[2])
  rec["goal_playlist"] = [rec["goal_playlist"][0] + "\u2028"]
  lines[2] = json.dumps(rec)
  (src / cpcd.TRAIN_FILE).write_text("\n".join(lines) + "\n", encoding="utf-8")
  (src / cpcd.VAL_FILE).write_text(open(os.path.join(CPCD_DIR, cpcd.VAL_FILE), encoding="utf-8").read(),
                                   encoding="utf-8")
  with pytest.raises(UserInputError, match=r"train.jsonl:3: conversation '.*': goal_playlist\[0\] contains"):
    cpcd.convert_cpcd(src, tmp_path / "out", vocab_size=None)
  assert sorted(os.listdir(tmp_path)) == ["src"]
  meta = cpcd.convert_cpcd(src, tmp_path / "out", vocab_size=None, on_error="skip")
  assert meta["read_stats"]["skipped"] == 1 and meta["num_playlists"] == 44
  with pytest.raises(UserInputError, match="--artists must be one of"):
    cpcd.convert_cpcd(src, tmp_path / "o2", artists="hidden")
  counts = collections.Counter(json.loads(l)["id"] for l in lines)
  assert max(counts.values()) == 1


# A hand-made catalog for EntityMasker: (title, artists, release).
SONGS = [("Bohemian Rhapsody", ("Queen",), "A Night at the Opera"), ("Mask Off", ("Future",), "FUTURE"),
         ("Basket Case", ("Green Day",), "Dookie"), ("Friday I'm in Love", ("The Cure",), "Wish"),
         ("Shake It Off", ("Taylor Swift",), "1989"), ("Fire and Rain", ("James Taylor",), "Sweet Baby James"),
         ("Lollipop", ("Lil Wayne", "Static Major"), "Tha Carter III"),
         ("Tupac Back", ("Meek Mill", "Rick Ross"), "Dreams and Nightmares"),
         ("Stronger", ("Kanye West",), "Graduation"),
         ("Here Comes The Sun - Remastered 2009", ("The Beatles",), "Abbey Road"),
         ("Uprising", ("Muse",), "The Resistance"), ("Llove (Dada Life Remix)", ("Kaskade",), "Llove"),
         ("Love", ("Lana Del Rey",), "Lust for Life")]


def test_entity_masker_conversation_artists_common_words_too():
  m = cpcd.EntityMasker(SONGS)
  text, removed = m.mask("I want Queen, some future hits, greenday and the cure tonight",
                         ["Queen", "Future", "Green Day", "The Cure"], [])
  assert text == "I want , some hits, and tonight" and removed == {"artist": 4}
  # Not this conversation's artists: common-word catalog names stay (as with `masked`), others go.
  text, removed = m.mask("songs for the future by queen, not Kanye West", ["Taylor Swift"], ["Shake It Off"])
  assert text == "songs for the future by queen, not" and removed == {"catalog_artist": 1}


def test_entity_masker_near_misses_titles_and_name_parts():
  m = cpcd.EntityMasker(SONGS)
  assert m.mask("more Tylor swift and lil wayn's songs please", ["Taylor Swift", "Lil Wayne"], []) == \
      ("more and songs please", {"near_miss": 2})
  assert m.mask("play Tupac Back and here comes the sun", ["Meek Mill", "Rick Ross", "The Beatles"],
                ["Tupac Back", "Here Comes The Sun - Remastered 2009"]) == ("play and", {"title": 2})
  # "Kanye" names one catalog artist; "Taylor" two (Taylor Swift, James Taylor): ambiguous, kept.
  assert "taylor" in m.shared_words and "kanye" not in m.shared_words
  assert m.mask("more Kanye and some Taylor", ["Kanye West", "Taylor Swift"], []) == \
      ("more and some Taylor", {"name_part": 1})
  # Kept: 'use' is not 'Muse' (first letter), 'love' is a word (not a misspelling of 'Llove'), and a
  # title that is one common English word ('Love') is never masked.
  assert m.mask("use it, I love this", ["Muse", "Kaskade", "Lana Del Rey"], ["Llove (Dada Life Remix)", "Love"]) == \
      ("use it, I love this", {})
  names = m.names(["The Cure", "Obie Trice feat. 50 Cent"],
                  ["Here Comes The Sun - Remastered 2009", "The Way I Am", "Up"])
  assert names == {"thecure": ("artist", 2), "cure": ("artist", 1), "obietricefeat50cent": ("artist", 5),
                   "obietrice": ("artist", 2), "50cent": ("artist", 2), "obie": ("name_part", 1),
                   "trice": ("name_part", 1), "cent": ("name_part", 1),
                   "herecomesthesunremastered2009": ("title", 6), "herecomesthesun": ("title", 4),
                   "thewayiam": ("title", 4), "wayiam": ("title", 3)}  # "Up": fewer than 3 letters


@pytest.fixture(scope="module")
def entities_masked(tmp_path_factory):
  out = tmp_path_factory.mktemp("cpcd") / "em"
  meta = cpcd.convert_cpcd(CPCD_DIR, out, artists="entities_masked", vocab_size=None)
  return str(out), meta


def test_entities_masked_import_leaves_no_goal_entities(converted, masked, entities_masked):
  out, meta = entities_masked
  m = meta["masking"]
  assert m["rule"] == cpcd.ENTITY_MASK_RULE and m["catalog_rule"] == cpcd.MASK_RULE
  assert sum(m["removed_by_kind"].values()) == m["replacements"] == meta["masked_replacements"]
  assert all(m["removed_by_kind"][k] > 0 for k in ("catalog_artist", "artist", "title", "near_miss"))
  assert not any(k.startswith("removed_") for k in meta)
  before, after = _titles(converted[0]), _titles(out)
  assert before.keys() == after.keys() and all(len(t) <= len(before[k]) for k, t in after.items())
  test_ids = formats.read_splits(os.path.join(out, "splits.json"))["test"]
  assert test_ids == sorted(c["id"] for c in RAW_VAL)
  goals = entity_check.goal_entities(CPCD_DIR)
  # The independent checker: most prompts name a goal artist or title as written, about half after
  # `masked`, at most 2% of the test prompts after `entities_masked` (none on this slice).
  reports = {name: entity_check.residue_report(_titles(d), goals, ids=test_ids)
             for name, d in (("as_written", converted[0]), ("masked", masked[0]), ("entities_masked", out))}
  assert reports["as_written"]["share"] >= 0.6 and reports["masked"]["share"] >= 0.3
  assert reports["entities_masked"]["share"] <= 0.02
  assert entity_check.residue_report(out, CPCD_DIR)["num_with_residue"] <= 1


def test_import_help_lists_entities_masked(capsys):
  with pytest.raises(SystemExit):
    cli.main(["import", "cpcd", "--help"])
  text = capsys.readouterr().out
  assert "entities_masked: also each" in " ".join(text.split()) and "%%" not in text and "%(" not in text
