"""How a worker pod's process tells its Job what happened: the exit codes the operator's
podFailurePolicy reads (see `objmig.controller.jobs`)."""

#: Exit code for errors no retry can fix (credentials, missing bucket, missing Secret key).
#: The Job's podFailurePolicy fails the index on it instead of retrying the pod.
EXIT_PERMANENT = 42
#: Exit code of a worker stopped by SIGTERM/SIGINT before its work was done (pod deleted,
#: Job suspended, node drained), after giving its leases back. Not 0: the Job must not count
#: the index as complete. The podFailurePolicy ignores it, so the pod is replaced (or, when
#: suspended, started again on resume) without using up the index's retries.
EXIT_INTERRUPTED = 143
#: Exit code of a worker that gave up waiting for an unreachable ledger database
#: (EX_TEMPFAIL). The podFailurePolicy ignores it too: the pod is replaced and waits again,
#: without using up the index's retries, for as long as the ledger stays away.
EXIT_LEDGER_UNAVAILABLE = 75
#: Exit code of a stage that failed in a way another try may not meet (a store or the
#: network failing for longer than a request's retries): the Job runs the pod again, up to
#: its backoffLimitPerIndex, after which the migration fails with the cause recorded.
EXIT_FAILED = 1
