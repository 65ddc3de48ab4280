"""Regenerates tests/data/good and tests/data/bad (the bad-input corpus).  Run from this folder.

Each bad file has one entry in bad/manifest.json: what reads it (`kind`), the error it must raise
(`error`, a regex that includes the file name and the record: line, row or playlist index) and what
`on_error="skip"` does with it (`skip`: number of records skipped, or "raises" when the whole file
is unusable).
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
write("good/playlists.jsonl", lines(P))
extra = {"track_id": "t9", "artist": "Z", "title": "z", "album": "", "tags": []}
manifest = []


def bad(name, kind, data, error, skip):
  write(os.path.join("bad", name), data)
  manifest.append({"file": name, "kind": kind, "error": error, "skip": skip})


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
    r"playlists_unknown_track\.jsonl:2: playlist 'p9': unknown track 'nope'", 1)
bad("playlists_duplicate_track.jsonl", "playlists",
    lines(P + [{"playlist_id": "p9", "title": "x", "track_ids": ["t1", "t2", "t1"]}]),
    r"playlists_duplicate_track\.jsonl:4: playlist 'p9': track 't1' appears twice", 1)
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
    lines(P + [{"playlist_id": "p9", "title": "  \u200b ", "description": "", "track_ids": ["t1"]}]),
    r"playlists_blank_prompt\.jsonl:4: playlist 'p9' has no title or description", 1)
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
bad("mpd_blank_name.json", "mpd", mpd(good_mpd + [mpd_pl(2, name="   ")]),
    r"mpd_blank_name\.json: playlists\[2\]: pid 2 has no title or description", 1)

with open("bad/manifest.json", "w", encoding="utf-8") as f:
  json.dump(manifest, f, indent=1)
print(len(manifest), "bad inputs")
