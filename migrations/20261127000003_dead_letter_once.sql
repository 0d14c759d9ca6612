-- A message redelivered after a crash between writing its dead letter and
-- acking it is kept once.
CREATE UNIQUE INDEX dead_letters_once_per_message ON dead_letters (message_id)
    WHERE message_id IS NOT NULL;
