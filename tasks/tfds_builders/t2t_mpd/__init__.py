"""TFDS builder of the Spotify Million Playlist Dataset (manual download)."""
