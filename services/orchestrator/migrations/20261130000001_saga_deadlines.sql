-- No saga waits for ever: each row says which reply it waits for (`awaiting`, the Ftgo-Saga-Step
-- of the command in flight), how often that command was sent, and when it is overdue. A saga
-- that gave up on a step is FAILED and keeps `awaiting`, so that a late reply resumes it.
ALTER TABLE sagas DROP CONSTRAINT sagas_state_check;
ALTER TABLE sagas ADD CONSTRAINT sagas_state_check
    CHECK (state IN ('RUNNING', 'COMPENSATING', 'SUCCEEDED', 'COMPENSATED', 'FAILED'));
ALTER TABLE sagas
    ADD COLUMN awaiting TEXT,
    ADD COLUMN attempts INT NOT NULL DEFAULT 1 CHECK (attempts >= 0),
    ADD COLUMN deadline TIMESTAMPTZ;
UPDATE sagas
   SET awaiting = step || CASE state WHEN 'COMPENSATING' THEN ':c' ELSE ':f' END,
       deadline = now()
 WHERE state IN ('RUNNING', 'COMPENSATING');
-- The orchestrator's deadline sweep reads only the sagas that wait.
CREATE INDEX sagas_by_deadline ON sagas (deadline) WHERE deadline IS NOT NULL;
