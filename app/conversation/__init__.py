"""A conversation kept: `record` holds it in memory and autosaves it to its folder as it goes,
and writes its exports (transcripts, subtitles, audio)."""
