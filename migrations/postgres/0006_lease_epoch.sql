-- Fencing: each change of a lease's holder raises its epoch. A leader writes run and action
-- transitions only while its (holder, epoch) is still the lease's and the lease has not run
-- out, so a replica that lost the leadership cannot write another transition.
ALTER TABLE leader_leases ADD COLUMN epoch BIGINT NOT NULL DEFAULT 0;
