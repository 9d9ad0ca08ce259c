-- The newest event whose kind is one of the list $kinds (zero or one row).
SELECT ts, kind, model, detail FROM events WHERE list_contains($kinds, kind) ORDER BY ts DESC LIMIT 1;
