-- dlq_errors: per error code and target of the DLQ messages read for the window's events (as dlq_causes), the most
-- frequent ERROR_MESSAGE (cut to 500 characters) and how many messages carry it: what EventBridge said when it gave up.
CREATE OR REPLACE TABLE dlq_errors AS
WITH m AS (
    SELECT coalesce(error_code, '(none)') AS error_code,
           coalesce(target_arn, '(none)') AS target_arn,
           left(coalesce(error_message, '(none)'), 500) AS error_message,
           count(*) AS messages
    FROM dlq
    WHERE event_time >= $window_start AND event_time < $window_end
    GROUP BY ALL
)
SELECT error_code, target_arn,
       arg_max(error_message, (messages, error_message)) AS error_message,
       max(messages) AS with_message,
       sum(messages)::BIGINT AS messages
FROM m
GROUP BY error_code, target_arn
ORDER BY messages DESC, error_code, target_arn;
