"""Settings every container of the platform shares."""

import pulumi
import pulumi_docker as docker

# CIS Docker 5.25: a setuid binary inside an image cannot raise a process's privileges. None of the
# platform's images needs that (nginx's master drops to its workers with setuid(2), which this allows).
SECURITY_OPTS = ["no-new-privileges:true"]


def capabilities(*adds: str) -> docker.ContainerCapabilitiesArgs:
    """CIS 5.3: start from no capabilities at all and add back only what the image's own startup
    needs. Docker's default set (14, including CHOWN, DAC_OVERRIDE, FOWNER, NET_RAW, MKNOD) is far
    more than a service that runs as a fixed user, or as root in directories root owns, ever uses.
    The integration tests run every ci container with exactly this set."""
    return docker.ContainerCapabilitiesArgs(drops=["ALL"], adds=sorted(adds) or None)


def in_place(opts: pulumi.ResourceOptions) -> pulumi.ResourceOptions:
    """Replace the container delete-first. Every container here has a fixed name (and many a
    fixed host port), which Docker will not give to a second container while the first exists;
    Pulumi's default create-before-delete then fails the update (pulumi/pulumi-docker#1356,
    "by design"). Worker pools add their own drain and ordering (`components/workers/rollout.py`)."""
    return pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(delete_before_replace=True))
