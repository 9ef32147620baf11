-- The `default` bucket was stored with `"scan": "required"` while that was the default policy,
-- and it served files marked `unscanned` when no scanner was configured. That behaviour is
-- now called `auto` (the default), and `required` refuses uploads without a scanner: the
-- `default` bucket keeps the behaviour it had. Other buckets keep what they say.
UPDATE buckets
SET policy = json_set(policy, '$.scan', 'auto')
WHERE name = 'default' AND json_extract(policy, '$.scan') = 'required';
