"""Tests for t2t_jax.data.entity_check (the independent masking checker) and tools/check_masking.py."""

import ast
import json
import os
import sys

import pytest

from t2t_jax.data import cpcd, entity_check
from t2t_jax.errors import UserInputError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CPCD_DIR = os.path.join(ROOT, "tests", "data", "cpcd")
sys.path.insert(0, os.path.join(ROOT, "tools"))
import check_masking  # pylint: disable=g-import-not-at-top,wrong-import-position


def _found(prompt, artists=(), titles=()):
  return [(f.kind, f.entity, f.text, f.exact) for f in entity_check.residue(prompt, artists, titles)]


def test_residue_exact_and_normalised():
  assert _found("more Queen please", ["Queen"]) == [("artist", "Queen", "queen", True)]
  assert _found("some BEATLES and beyonce's hits", ["The Beatles", "Beyoncé"]) == [
      ("artist", "Beyoncé", "beyonce", True), ("artist", "The Beatles", "beatles", True)]
  assert _found("AC-DC or u2?", ["AC/DC", "U2", "X"]) == [
      ("artist", "AC/DC", "ac dc", True), ("artist", "U2", "u2", True)]
  assert _found("I love here comes the sun!", titles=["Here Comes The Sun - Remastered 2009"]) == [
      ("title", "Here Comes The Sun - Remastered 2009", "here comes the sun", True)]
  assert _found("dont stop believin", titles=["Don't Stop Believin'"]) == [
      ("title", "Don't Stop Believin'", "dont stop believin", True)]


def test_residue_fuzzy_and_what_it_does_not_count():
  assert _found("more Tylor swift", ["Taylor Swift"]) == [("artist", "Taylor Swift", "tylor swift", False)]
  assert _found("lil wayn and greenday", ["Lil Wayne", "Green Day"]) == [
      ("artist", "Green Day", "greenday", False), ("artist", "Lil Wayne", "lil wayn", False)]
  # Not counted: a title that is one common English word, a common word near a name, part of a name.
  assert _found("songs I love for christmas", ["Llove"], ["Love", "Christmas"]) == []
  assert _found("something like Freddie Jackson", ["The Jackson 5"]) == []
  assert _found("future hits", ["Taylor Swift"], ["Shake It Off"]) == []


def test_checker_is_independent_of_the_masker():
  tree = ast.parse(open(entity_check.__file__, encoding="utf-8").read())
  imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
  imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
  imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
  assert not any("cpcd" in name for name in imported), imported
  # Both sides read the same raw files the same way: the goals match the importer's parse.
  goals = entity_check.goal_entities(CPCD_DIR)
  convs = [c for f in (cpcd.TRAIN_FILE, cpcd.VAL_FILE) for c in cpcd.read_conversations(os.path.join(CPCD_DIR, f))]
  assert set(goals) == {c.conversation_id for c in convs} and len(goals) == 47
  c = convs[0]
  assert goals[c.conversation_id].titles == tuple(dict.fromkeys(c.tracks[v][0] for v in c.goal if v in c.tracks))


def test_residue_report_counts_and_examples():
  goals = {"a": entity_check.Goal(("Queen",), ("Bohemian Rhapsody",)), "b": entity_check.Goal(("Muse",), ()),
           "c": entity_check.Goal(("Adele",), ("Hello",))}
  prompts = {"a": "queen and bohemian rhapsody", "b": "amuse me", "c": "hello there"}
  r = entity_check.residue_report(prompts, goals)
  assert (r["num_prompts"], r["num_with_residue"], r["by_kind"]) == (3, 1, {"artist": 1, "title": 1})
  assert r["share"] == pytest.approx(1 / 3)
  assert r["examples"] == [{"id": "a", "kind": "artist", "entity": "Queen", "text": "queen", "exact": True}]
  assert entity_check.residue_report(prompts, goals, ids=["b", "c"])["share"] == 0.0
  with pytest.raises(UserInputError, match="'z' has no prompt or no goal"):
    entity_check.residue_report(prompts, goals, ids=["z"])


def test_goal_entities_bad_input(tmp_path):
  with pytest.raises(UserInputError, match="not found"):
    entity_check.goal_entities(tmp_path)
  for name in entity_check.CPCD_FILES:
    (tmp_path / name).write_text('{"id": "a", "goal_playlist": [], "tracks": {}}\n{"id": "b"}\n', encoding="utf-8")
  with pytest.raises(UserInputError, match=r"train.jsonl:2: not a CPCD conversation"):
    entity_check.goal_entities(tmp_path)


def test_check_masking_tool(tmp_path, capsys):
  for artists in ("as_written", "entities_masked"):
    cpcd.convert_cpcd(CPCD_DIR, tmp_path / artists, artists=artists, vocab_size=None)
  assert check_masking.main(["--dataset_dir", str(tmp_path / "as_written"), "--cpcd_dir", CPCD_DIR,
                             "--json", str(tmp_path / "asw.json")]) == 0
  out = capsys.readouterr().out
  report = json.load(open(tmp_path / "asw.json", encoding="utf-8"))
  assert report["artists"] == "as_written" and set(report["splits"]) == {"train", "validation", "test", "all"}
  assert report["splits"]["all"]["num_prompts"] == 45 and report["splits"]["all"]["share"] > 0.6
  first = report["splits"]["all"]["examples"][0]
  assert f"{first['id']}  {first['kind']}" in out and "test" in out
  assert check_masking.main(["--dataset_dir", str(tmp_path / "entities_masked"), "--cpcd_dir", CPCD_DIR]) == 0
  assert "  test          0 /   10    0.0%" in capsys.readouterr().out
  assert check_masking.main(["--dataset_dir", str(tmp_path / "missing"), "--cpcd_dir", CPCD_DIR]) == 2
  assert "check_masking: error:" in capsys.readouterr().err
