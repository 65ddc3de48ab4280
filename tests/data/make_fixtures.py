"""Regenerates tests/data/good and tests/data/bad (the bad-input corpus).  Run from this folder.

Each bad file has one entry in bad/manifest.json: what reads it (`kind`), the error it must raise
(`error`, a regex that includes the file name and the record: line, row or playlist index) and what
`on_error="skip"` does with it (`skip`: number of records skipped, or "raises" when the whole file
is unusable).  Real-data quirks that are accepted rather than rejected (a track listed twice in a
playlist, a playlist without prompt text) have `error: null`, `accept` (the read_stats counters
that must count them, in both modes) and `num_playlists` (how many are written).  `counts` (optional): read_stats counters checked under skip;
`skip_error` (optional): the skip message when it differs from `error`.
"""

import json
import os

import pyarrow as pa
import pyarrow.parquet as pq

T = [{"track_id": f"t{i}", "artist": f"Artist {i}", "title": f"Song {i}", "album": "A", "tags": ["x"]}
     for i in range(1, 5)]
P = [{"playlist_id": "p1", "title": "chill", "description": "", "track_ids": ["t1", "t2"]},
     {"playlist_id": "p2", "title": "rock", "description": "loud", "track_ids": ["t3", "t4", "t1"]},
     {"playlist_id": "p3", "title": "jazz", "description": "", "track_ids": ["t2"]}]


def lines(recs):
  return "".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in recs)


def write(path, data):
  with open(path, "wb") as f:
    f.write(data if isinstance(data, bytes) else data.encode("utf-8"))


def mpd_track(i):
  return {"pos": i, "artist_name": f"Artist {i}", "track_uri": f"spotify:track:{i:022d}", "artist_uri": "spotify:artist:a",
          "track_name": f"Song {i}", "album_uri": "spotify:album:b", "duration_ms": 1000, "album_name": "Album"}


def mpd_pl(pid, n=3, **kw):
  p = {"name": f"list {pid}", "collaborative": "false", "pid": pid, "modified_at": 0, "num_tracks": n,
       "tracks": [mpd_track(i) for i in range(n)]}
  p.update(kw)
  return p


def mpd(playlists):
  return json.dumps({"info": {"slice": "0-9", "version": "v1"}, "playlists": playlists}, indent=1)


write("good/catalog.jsonl", lines(T))
# Excel's "CSV UTF-8": a byte-order mark, CRLF line ends.
write("good/catalog_bom.csv", "\ufeff" + (csv_header_good := "track_id,artist,title,album,tags\r\n")
      + "".join(f"{t['track_id']},{t['artist']},{t['title']},{t['album']},x\r\n" for t in T))
write("good/playlists.jsonl", lines(P))
extra = {"track_id": "t9", "artist": "Z", "title": "z", "album": "", "tags": []}
manifest = []


def bad(name, kind, data, error, skip, **extra):
  write(os.path.join("bad", name), data)
  manifest.append({"file": name, "kind": kind, "error": error, "skip": skip, **extra})


def raw_line(**fields):
  """One JSON line with the values written as given (for escapes such as "\\ud800" that a
  Python str cannot be UTF-8 encoded with)."""
  return "{" + ", ".join(f'"{k}": {v}' for k, v in fields.items()) + "}"


bad("catalog_truncated.jsonl", "catalog", lines(T) + '{"track_id": "t9", "artist": "Z", "tit',
    r"catalog_truncated\.jsonl:5: malformed JSON", 1)
bad("catalog_wrong_type.jsonl", "catalog", lines(T + [dict(extra, title=7)]),
    r"catalog_wrong_type\.jsonl:5: field 'title' must be a string, got int", 1)
bad("catalog_missing_field.jsonl", "catalog", lines(T[:2] + [{"track_id": "t9", "title": "z"}] + T[2:]),
    r"catalog_missing_field\.jsonl:3: missing field 'artist'", 1)
bad("catalog_duplicate_id.jsonl", "catalog", lines(T + [dict(T[0], title="again")]),
    r"catalog_duplicate_id\.jsonl:5: duplicate track_id 't1'", 1)
bad("catalog_non_utf8.jsonl", "catalog", lines(T).encode() + b'{"track_id": "t9", "artist": "\xff\xfe", "title": "z"}\n',
    r"catalog_non_utf8\.jsonl:5: not UTF-8", 1)
bad("catalog_empty.jsonl", "catalog", "", r"catalog_empty\.jsonl: the catalog is empty", "raises")
bad("catalog_not_object.jsonl", "catalog", lines(T + ['["t9", "Z", "z"]']),
    r"catalog_not_object\.jsonl:5: expected a JSON object, got list", 1)
bad("catalog_bad_tags.jsonl", "catalog", lines(T + [dict(extra, tags="rock")]),
    r"catalog_bad_tags\.jsonl:5: field 'tags' must be a list of strings", 1)
csv_header = "track_id,artist,title,album,tags\n"
csv_rows = "".join(f"{t['track_id']},{t['artist']},{t['title']},{t['album']},x|y\n" for t in T)
bad("catalog_missing_column.csv", "catalog", "track_id,artist,album\nt1,A,B\n",
    r"catalog_missing_column\.csv:1: missing column\(s\) \['title'\]", "raises")
bad("catalog_extra_field.csv", "catalog", csv_header + csv_rows + "t9,Z,z,,,surplus\n",
    r"catalog_extra_field\.csv:6: 1 more field\(s\) than the header", 1)
bad("catalog_duplicate.csv", "catalog", csv_header + csv_rows + "t2,Z,z,,\n",
    r"catalog_duplicate\.csv:6: duplicate track_id 't2'", 1)
bad("catalog_not_parquet.parquet", "catalog", "track_id,artist\n", r"catalog_not_parquet\.parquet: not a Parquet file",
    "raises")
table = pa.table({"track_id": ["t1", "t2", "t3", "t4", "t9"], "artist": ["A"] * 5,
                  "title": ["a", "b", "c", "d", None], "album": [""] * 5,
                  "tags": pa.array([["x"]] * 5, type=pa.list_(pa.string()))})
pq.write_table(table, "bad/catalog_null_title.parquet")
manifest.append({"file": "catalog_null_title.parquet", "kind": "catalog",
                 "error": r"catalog_null_title\.parquet: row 4: missing field 'title'", "skip": 1})

bad("playlists_truncated.jsonl", "playlists", lines(P) + '{"playlist_id": "p9", "title": "x", "track_ids": ["t1"',
    r"playlists_truncated\.jsonl:4: malformed JSON", 1)
bad("playlists_empty_playlist.jsonl", "playlists", lines(P + [{"playlist_id": "p9", "title": "x", "track_ids": []}]),
    r"playlists_empty_playlist\.jsonl:4: playlist 'p9' is empty", 1)
bad("playlists_unknown_track.jsonl", "playlists",
    lines(P[:1] + [{"playlist_id": "p9", "title": "x", "track_ids": ["t1", "nope"]}] + P[1:]),
    r"playlists_unknown_track\.jsonl:2: playlist 'p9': unknown track 'nope'", 0,
    counts={"unknown_tracks_dropped": 1})
bad("playlists_unknown_only.jsonl", "playlists",
    lines(P[:1] + [{"playlist_id": "p9", "title": "x", "track_ids": ["nope", "nada"]}] + P[1:]),
    r"playlists_unknown_only\.jsonl:2: playlist 'p9': unknown track 'nope'", 1,
    counts={"unknown_tracks_dropped": 2, "playlists_without_known_tracks": 1},
    skip_error=r"playlists_unknown_only\.jsonl:2: playlist 'p9': none of its 2 tracks is in the catalog")
bad("playlists_duplicate_track.jsonl", "playlists",
    lines(P + [{"playlist_id": "p9", "title": "x", "track_ids": ["t1", "t2", "t1"]}]),
    None, 0, accept={"duplicate_tracks_in_playlists": 1}, num_playlists=4)
bad("playlists_duplicate_id.jsonl", "playlists", lines(P + [dict(P[0], title="again")]),
    r"playlists_duplicate_id\.jsonl:4: duplicate playlist_id 'p1'", 1)
bad("playlists_wrong_type.jsonl", "playlists", lines(P + [{"playlist_id": "p9", "title": "x", "track_ids": "t1"}]),
    r"playlists_wrong_type\.jsonl:4: playlist 'p9': 'track_ids' must be a list, got str", 1)
bad("playlists_id_not_string.jsonl", "playlists", lines(P + [{"playlist_id": 9, "title": "x", "track_ids": ["t1"]}]),
    r"playlists_id_not_string\.jsonl:4: field 'playlist_id' must be a string, got int", 1)
bad("playlists_missing_tracks.jsonl", "playlists", lines(P + [{"playlist_id": "p9", "title": "x"}]),
    r"playlists_missing_tracks\.jsonl:4: playlist 'p9': missing field 'track_ids'", 1)
bad("playlists_huge_prompt.jsonl", "playlists",
    lines(P + [{"playlist_id": "p9", "title": "la " * 34_000, "track_ids": ["t1"]}]),
    r"playlists_huge_prompt\.jsonl:4: field 'title' is 102000 characters long", 1)
bad("playlists_blank_prompt.jsonl", "playlists",
    lines(P + [{"playlist_id": "p9", "title": "  \u200b ", "description": "", "track_ids": ["t1"]},
               {"playlist_id": "p10", "title": "<MISSING>", "description": "<br/>&nbsp;", "track_ids": ["t1"]}]),
    None, 0, accept={"empty_prompt_playlists": 2}, num_playlists=3)
bad("playlists_non_utf8.jsonl", "playlists", lines(P).encode() + b'{"playlist_id": "p9", "title": "\xc3\x28", "track_ids": ["t1"]}\n',
    r"playlists_non_utf8\.jsonl:4: not UTF-8", 1)
bad("playlists_bad_intent.jsonl", "playlists", lines(P + [{"playlist_id": "p9", "title": "x", "track_ids": ["t1"], "intent": "jazz"}]),
    r"playlists_bad_intent\.jsonl:4: playlist 'p9': 'intent' must be an object", 1)
bad("playlists_empty_file.jsonl", "playlists", "\n\n", r"playlists_empty_file\.jsonl: no valid playlists", "raises")

bad("splits_unknown_playlist.json", "splits", json.dumps({"train": ["p1", "p2"], "test": ["p7"]}),
    r"splits_unknown_playlist\.json: split 'test' names unknown playlist 'p7'", 0)
bad("splits_overlap.json", "splits", json.dumps({"train": ["p1", "p2"], "test": ["p2"]}),
    r"splits_overlap\.json: playlist 'p2' is in both 'train' and 'test'", "raises")
bad("splits_bad_json.json", "splits", '{"train": ["p1",', r"splits_bad_json\.json:1: malformed JSON", "raises")
bad("splits_unknown_name.json", "splits", json.dumps({"train": ["p1"], "dev": ["p2"]}),
    r"splits_unknown_name\.json: unknown split names \['dev'\]", "raises")

good_mpd = [mpd_pl(0), mpd_pl(1, 4)]
bad("mpd_truncated.json", "mpd", mpd(good_mpd)[:-40], r"mpd_truncated\.json:\d+: malformed JSON", "raises")
bad("mpd_not_slice.json", "mpd", json.dumps({"info": {}, "lists": []}), r"mpd_not_slice\.json: not an MPD slice", "raises")
bad("mpd_non_utf8.json", "mpd", mpd(good_mpd).encode().replace(b"list 1", b"list \xff"),
    r"mpd_non_utf8\.json:\d+: not UTF-8", "raises")
p = mpd_pl(2)
del p["tracks"]
bad("mpd_missing_tracks.json", "mpd", mpd(good_mpd + [p]), r"mpd_missing_tracks\.json: playlists\[2\]: pid 2: 'tracks' must be a list", 1)
bad("mpd_empty_playlist.json", "mpd", mpd(good_mpd + [mpd_pl(2, 0)]), r"mpd_empty_playlist\.json: playlists\[2\]: pid 2: empty playlist", 1)
p = mpd_pl(2)
p["tracks"][1]["track_name"] = 12
bad("mpd_wrong_type.json", "mpd", mpd([p] + good_mpd),
    r"mpd_wrong_type\.json: playlists\[0\]: pid 2 tracks\[1\]: field 'track_name' must be a string", 1)
p = mpd_pl(2)
del p["tracks"][0]["track_uri"]
bad("mpd_missing_uri.json", "mpd", mpd(good_mpd + [p]), r"mpd_missing_uri\.json: playlists\[2\]: pid 2 tracks\[0\]: missing field 'track_uri'", 1)
bad("mpd_duplicate_pid.json", "mpd", mpd(good_mpd + [mpd_pl(1)]), r"mpd_duplicate_pid\.json: playlists\[2\]: pid 1: duplicate pid", 1)
bad("mpd_bad_pid.json", "mpd", mpd(good_mpd + [mpd_pl([3])]), r"mpd_bad_pid\.json: playlists\[2\]: missing or bad 'pid'", 1)
bad("mpd_blank_name.json", "mpd", mpd(good_mpd + [mpd_pl(2, name="   "), mpd_pl(3, name="<MISSING>")]),
    None, 0, accept={"empty_prompt_playlists": 2}, num_playlists=2)

# Ids that would break one-id-a-line files (str.splitlines splits on all of these), over-long ids,
# lone surrogates, absurd nesting: rejected at the door (issue 14).
DEEP = 5_000  # nesting levels (json gives up past ~1000; issue 14 saw 100k)
BAD_ID_CHARS = {"newline": "\\n", "cr": "\\r", "u2028": "\\u2028", "u2029": "\\u2029", "nel": "\\u0085",
                "vt": "\\u000b", "ff": "\\u000c", "fs": "\\u001c", "tab": "\\t"}
for tag, esc in BAD_ID_CHARS.items():
  bad(f"catalog_id_{tag}.jsonl", "catalog",
      lines(T) + raw_line(track_id=f'"t{esc}9"', artist='"Z"', title='"z"') + "\n",
      rf"catalog_id_{tag}\.jsonl:5: field 'track_id' contains the control/separator character", 1)
bad("catalog_id_too_long.jsonl", "catalog", lines(T + [dict(extra, track_id="t" * 513)]),
    r"catalog_id_too_long\.jsonl:5: field 'track_id' is 513 characters long \(limit 512\): 'ttt", 1)
bad("catalog_id_space.jsonl", "catalog", lines(T + [dict(extra, track_id=" t9")]),
    r"catalog_id_space\.jsonl:5: field 'track_id' has leading/trailing whitespace: ' t9'", 1)
bad("catalog_lone_surrogate.jsonl", "catalog", lines(T) + raw_line(track_id='"t9"', artist='"Z"', title='"a\\ud800b"') + "\n",
    r"catalog_lone_surrogate\.jsonl:5: field 'title' contains a lone surrogate '\\ud800'", 1)
bad("catalog_deep_nesting.jsonl", "catalog", lines(T) + "[" * DEEP + "]" * DEEP + "\n",
    r"catalog_deep_nesting\.jsonl:5: JSON nested too deeply", 1)
bad("catalog_id_newline.csv", "catalog", csv_header + csv_rows + '"t\n9",Z,z,,\n',
    r"catalog_id_newline\.csv:7: field 'track_id' contains the control/separator character '\\n'", 1)
bad("catalog_non_utf8.csv", "catalog", (csv_header + csv_rows).encode() + b"t9,\xff,z,,\n",
    r"catalog_non_utf8\.csv:6: not UTF-8", "raises")
bad("playlists_id_u2028.jsonl", "playlists",
    lines(P) + raw_line(playlist_id='"p\\u20289"', title='"x"', track_ids='["t1"]') + "\n",
    r"playlists_id_u2028\.jsonl:4: field 'playlist_id' contains the control/separator character '\\u2028'", 1)
bad("playlists_track_id_cr.jsonl", "playlists",
    lines(P) + raw_line(playlist_id='"p9"', title='"x"', track_ids='["t1", "t2\\r"]') + "\n",
    r"playlists_track_id_cr\.jsonl:4: playlist 'p9': track_ids\[1\] contains the control/separator character '\\r'", 1)
bad("playlists_lone_surrogate.jsonl", "playlists",
    lines(P) + raw_line(playlist_id='"p9"', title='"x"', description='"\\udc80"', track_ids='["t1"]') + "\n",
    r"playlists_lone_surrogate\.jsonl:4: field 'description' contains a lone surrogate", 1)
bad("playlists_deep_nesting.jsonl", "playlists", lines(P) + '{"a": ' * DEEP + "1" + "}" * DEEP + "\n",
    r"playlists_deep_nesting\.jsonl:4: JSON nested too deeply", 1)
p = mpd_pl(2)
p["tracks"][1]["track_uri"] = "spotify:track:\nx"
bad("mpd_uri_newline.json", "mpd", mpd(good_mpd + [p]),
    r"mpd_uri_newline\.json: playlists\[2\]: pid 2 tracks\[1\]: track_uri contains the control/separator character '\\n'", 1)
p = mpd_pl(2)
p["tracks"][0]["track_uri"] = "spotify:track:" + "x" * 600
bad("mpd_uri_too_long.json", "mpd", mpd(good_mpd + [p]),
    r"mpd_uri_too_long\.json: playlists\[2\]: pid 2 tracks\[0\]: track_uri is 614 characters long", 1)
bad("mpd_pid_whitespace.json", "mpd", mpd(good_mpd + [mpd_pl(" 7")]),
    r"mpd_pid_whitespace\.json: playlists\[2\]: missing or bad 'pid' \(' 7': has leading/trailing whitespace", 1)
bad("mpd_lone_surrogate.json", "mpd", mpd(good_mpd + [mpd_pl(2)]).replace('"list 2"', '"list \\ud800"'),
    r"mpd_lone_surrogate\.json: playlists\[2\]: pid 2: field 'name' contains a lone surrogate", 1)
bad("mpd_deep_nesting.json", "mpd", '{"playlists": ' + "[" * DEEP + "]" * DEEP + "}",
    r"mpd_deep_nesting\.json: JSON nested too deeply", "raises")
bad("splits_deep_nesting.json", "splits", '{"train": ' + "[" * DEEP + "]" * DEEP + "}",
    r"splits_deep_nesting\.json: JSON nested too deeply", "raises")
bad("splits_bad_id.json", "splits", json.dumps({"train": ["p1", "p2"], "test": ["p3\u2029"]}),
    r"splits_bad_id\.json: split 'test'\[0\] contains the control/separator character '\\u2029'", "raises")

with open("bad/manifest.json", "w", encoding="utf-8") as f:
  json.dump(manifest, f, indent=1)
print(len(manifest), "bad inputs")
