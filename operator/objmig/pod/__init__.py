"""What runs inside the operator's worker Job pods (`objmig worker`): ledger and S3 only.

- `migration_stages`: the scan and copy stages of an ObjectMigration (`work`);
- `cleanup_stage`: one pass of a MigrationCleanup (`clean`);
- `exit_codes`: what the process tells its Job (read by the podFailurePolicy).
"""
