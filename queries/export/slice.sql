-- slice: the rows of `export_in` in one event-time range of queries/export/slices.sql ($lo NULL: the rows without an
-- event time; $hi NULL: no upper end).
SELECT * FROM export_in
WHERE CASE WHEN $lo IS NULL THEN event_time IS NULL
           ELSE event_time >= $lo AND ($hi IS NULL OR event_time < $hi) END
