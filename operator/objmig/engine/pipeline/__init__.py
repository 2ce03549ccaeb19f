"""One object's way through the migration, as separate steps over its ledger row.

In the spirit of rclone's fs/operations, each step has one job and re-checks before it
acts:

- `looks`: what differs — the source as scanned vs. as it is now (HEAD, or batched by
  listing for the final re-check), and whether the target key is taken;
- `restore`: archived sources — request a restore once, then wait;
- `copy`: move the bytes (server-side or streamed), holding a transfer slot;
- `verify`: prove it — ETag, checksums or SHA-256 of both sides, metadata; pins the proof
  of an object about to be replaced in place;
- `outcomes`: the row's next state (`StepResult`) for each way an attempt ends (pure);
- `sides`: what every step shares: the migration's two stores and their settings;
- `orchestrator`: `ObjectPipeline`, which runs the steps for each claimed row.

Nothing here writes to the ledger, so a crash at any point leaves the row as it was
claimed, and whoever claims it next starts again from the facts in S3: a copy that was
made is found identical and only verified, a restore that was requested is found in
progress and waited for. Import from the modules; this package imports none of them, so
that the pure `outcomes` loads without the S3 clients.
"""
