-- The relay is now woken in-process by the transaction's writer after its commit
-- (ftgo_platform::messaging::outbox::commit), no longer by NOTIFY: a notifying transaction takes a
-- cluster-wide lock at commit, which serialised the commits of every service behind each other.
DROP TRIGGER IF EXISTS outbox_inserted ON messaging.outbox;
DROP FUNCTION IF EXISTS messaging.notify_outbox();
