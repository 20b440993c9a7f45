"""Settings every container of the platform shares."""

# CIS Docker 5.25: a setuid binary inside an image cannot raise a process's privileges. None of the
# platform's images needs that (nginx's master drops to its workers with setuid(2), which this allows).
SECURITY_OPTS = ["no-new-privileges:true"]
