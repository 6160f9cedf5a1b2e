-- pending_of: the pending events the recorded run of a window left (every column `pending` has but the window's key).
SELECT * EXCLUDE (window_key) FROM pending WHERE window_key = $window_key ORDER BY source_id;
