"""One GPU host: provisioned, verified, filled with weights and images, then handed to Docker."""

from __future__ import annotations

import hashlib
import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import pulumi
import pulumi_command as command
import pulumi_docker as docker

from components import inline
from stacks.config import HostConfig, ModelConfig, ProvisioningConfig
from stacks.inventory import Gpu, parse_inventory

SCRIPTS = Path(__file__).parent / "scripts"
S3_SYNC = Path(__file__).parent / "scripts" / "s3_sync.py"
# Docker daemon log-rotation defaults, for containers this stack does not manage itself.
DAEMON_LOG_MAX_SIZE = "100m"
DAEMON_LOG_MAX_FILE = "5"


def script(name: str) -> str:
    return (SCRIPTS / name).read_text()


def step_command(source: str, name: str, args: list[str], sudo: bool, interpreter: str = "bash") -> str:
    """`bash -c <script> <name> ARGS` (`components/inline.py`)."""
    prefix = ["sudo", "-n"] if sudo else []
    return shlex.join([*prefix, *inline.argv(interpreter, source, name, args)])


def snapshot_dir(cache: str, model: ModelConfig) -> str:
    """Where the Hugging Face cache keeps this revision, so vLLM finds it offline by id and revision."""
    org, repo = model.id.split("/", 1)
    return f"{cache}/hub/models--{org}--{repo}/snapshots/{model.revision}"


@dataclass(frozen=True)
class GpuHostArgs:
    host: HostConfig
    provisioning: ProvisioningConfig
    network_name: str
    """Docker name of the workers' network on this host."""
    internal_network: bool
    """True when nothing on the network needs egress or a published port."""
    verify_gpus: bool
    """Whether any `nvidia` worker runs here (a CPU-only host has nothing to verify)."""
    images: list[str] = field(default_factory=list)
    """Pinned images to pre-pull, so a cold start is model loading rather than a 10 GB pull."""
    prefetch: list[ModelConfig] = field(default_factory=list)
    """Models whose weights this host downloads before any worker starts."""
    published_ports: list[int] = field(default_factory=list)
    gateway_address: str | None = None
    ssh_private_key: pulumi.Output[str] | None = None
    hf_token: pulumi.Output[str] | None = None
    s3_credentials: pulumi.Output[str] | None = None
    """JSON `{"aws_access_key_id": …, "aws_secret_access_key": …}`, a secret."""


class GpuHost(pulumi.ComponentResource):
    """A Docker host made ready for vLLM workers, one idempotent step at a time.

    On an SSH host (`provision` on by default) it installs the pinned NVIDIA Container Toolkit and
    merges Docker log rotation into daemon.json; on every host with `nvidia` workers it proves a
    container sees the GPUs and the CUDA device, and exports the measured inventory. Then it
    prepares the cache directories on fast local storage (refusing network storage), checks the
    firewall around published worker ports, pre-fetches weights and pre-pulls images. Each step
    is a `pulumi_command` command carrying its script, so a second `up` runs nothing and a changed
    script re-runs; steps that see a secret log nothing and keep their output secret. The
    provider, network, volumes and every worker on the host depend on all of it, so the seed's
    silent failure (a model quietly loading on CPU) stops the deployment instead.
    """

    provider: docker.Provider
    network_name: pulumi.Output[str]
    model_cache_volume: pulumi.Output[str]
    inventory: pulumi.Output[list[Gpu] | None] | None
    """The GPUs the verification container saw; None on hosts without `nvidia` workers."""
    ready: list[pulumi.Resource]
    """The steps everything on this host must wait for."""

    def __init__(self, name: str, args: GpuHostArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("inference-stack:hosts:GpuHost", name, None, opts)
        self._name = name
        self._args = args
        host = args.host
        self._last: pulumi.Resource | None = None
        self.ready = []
        self.inventory = None
        if host.provisioned():
            self._step("toolkit", "toolkit.sh", [args.provisioning.toolkit_version])
            self._step("runtime", "runtime.sh", [DAEMON_LOG_MAX_SIZE, DAEMON_LOG_MAX_FILE])
        if args.verify_gpus:
            verify = self._step("verify", "verify.sh", [args.provisioning.verify_image])
            # stdout is None only under the mock runtime (`make render`), which runs no command.
            self.inventory = verify.stdout.apply(lambda out: None if out is None else parse_inventory(out, host.name))
        if host.ssh is not None:
            dirs = [host.model_cache_path, host.compile_cache_path]
            allow = "1" if host.allow_network_storage else "0"
            self._step("storage", "storage.sh", [host.cache_owner, allow, *dirs])
        if args.published_ports:
            ports = ",".join(str(p) for p in sorted(args.published_ports))
            self._step("firewall", "firewall.sh", [ports, args.gateway_address or ""])
        if args.prefetch:
            p = args.provisioning
            self._step("tools", "tools.sh", [p.tools_venv, p.huggingface_hub_version, p.boto3_version])
            named: set[str] = set()
            for model in args.prefetch:
                # A canary's second revision of a model gets a step of its own.
                step = f"weights-{model.served_name}"
                if step in named:
                    step += f"-{model.revision[:12]}"
                named.add(step)
                self._prefetch(model, step)
        if args.images:
            self._step("images", "pull-images.sh", sorted(set(args.images)))
        self.ready = [self._last] if self._last is not None else []

        self.provider = docker.Provider(
            f"{name}-docker",
            host=host.docker_url(),
            # Docker over SSH uses the system ssh client: refuse unknown host keys.
            ssh_opts=["-o", "StrictHostKeyChecking=yes"] if host.ssh is not None else None,
            opts=pulumi.ResourceOptions(parent=self),
        )
        on_host = pulumi.ResourceOptions(parent=self, provider=self.provider, depends_on=self.ready)
        network = docker.Network(
            f"{name}-workers",
            name=args.network_name,
            driver="bridge",
            internal=args.internal_network,
            labels=[docker.NetworkLabelArgs(label="inference-stack.host", value=host.name)],
            opts=on_host,
        )
        cache = docker.Volume(
            f"{name}-model-cache",
            driver="local",
            driver_opts={"type": "none", "o": "bind", "device": host.model_cache_path},
            labels=[docker.VolumeLabelArgs(label="inference-stack.host", value=host.name)],
            # Deleting the record never deletes a bind-mounted directory, but keep it anyway:
            # replacing it would detach every worker from its weights.
            opts=on_host.merge(pulumi.ResourceOptions(retain_on_delete=True)),
        )
        self.network_name = network.name
        self.model_cache_volume = cache.name
        outputs: dict[str, object] = {"networkName": self.network_name, "modelCacheVolume": self.model_cache_volume}
        if self.inventory is not None:
            outputs["gpus"] = self.inventory.apply(lambda gpus: [g.as_output() for g in gpus or []])
        self.register_outputs(outputs)

    def _step(
        self,
        step: str,
        script_name: str,
        args: list[str],
        stdin: pulumi.Output[str] | None = None,
        interpreter: str = "bash",
        source: str | None = None,
    ) -> command.remote.Command | command.local.Command:
        """One host step, after the previous one. With `stdin`, a secret travels on stdin only:
        logging is off and stdout/stderr are secret."""
        host = self._args.host
        text = source if source is not None else script(script_name)
        digest = hashlib.sha256(text.encode()).hexdigest()
        secret = stdin is not None
        opts = pulumi.ResourceOptions(
            parent=self,
            depends_on=[self._last] if self._last is not None else None,
            additional_secret_outputs=["stdout", "stderr"] if secret else None,
        )
        resource: command.remote.Command | command.local.Command
        if host.ssh is not None:
            resource = command.remote.Command(
                f"{self._name}-{step}",
                connection=self._connection(),
                create=step_command(text, script_name, args, sudo=True, interpreter=interpreter),
                stdin=stdin,
                triggers=[digest],
                logging=command.remote.Logging.NONE if secret else None,
                opts=opts,
            )
        else:
            resource = command.local.Command(
                f"{self._name}-{step}",
                create=step_command(text, script_name, args, sudo=False, interpreter=interpreter),
                stdin=stdin,
                triggers=[digest],
                logging=command.local.Logging.NONE if secret else None,
                opts=opts,
            )
        self._last = resource
        return resource

    def options(self, parent: pulumi.Resource) -> pulumi.ResourceOptions:
        """For anything deployed on this host: its Docker provider, after every provisioning step."""
        return pulumi.ResourceOptions(parent=parent, provider=self.provider, depends_on=self.ready)

    def data_volume(self, name: str, docker_name: str, parent: pulumi.Resource) -> docker.Volume:
        """A named volume for data that must outlive its container, and the stack: deleting the
        stack leaves it in place (`retain_on_delete`), so no `destroy` ever drops a database."""
        return docker.Volume(
            name,
            name=docker_name,
            opts=self.options(parent).merge(pulumi.ResourceOptions(retain_on_delete=True)),
        )

    def run_command(
        self,
        name: str,
        argv: list[str],
        triggers: list[pulumi.Input[str]],
        parent: pulumi.Resource,
        depends_on: list[pulumi.Resource],
        delete: list[str] | None = None,
        stdin: pulumi.Input[str] | None = None,
        aliases: list[pulumi.Alias] | None = None,
    ) -> command.remote.Command | command.local.Command:
        """Runs `argv` on this host (as root over SSH) whenever a trigger changes, and `delete`
        (when given) before the command is deleted or replaced. `stdin` (may be secret) is
        written to the command's standard input. `aliases`: the URNs it had before a move."""
        host = self._args.host
        opts = pulumi.ResourceOptions(parent=parent, depends_on=depends_on, aliases=aliases)
        if host.ssh is not None:
            return command.remote.Command(
                name,
                connection=self._connection(),
                create=shlex.join(["sudo", "-n", *argv]),
                delete=shlex.join(["sudo", "-n", *delete]) if delete else None,
                triggers=triggers,
                stdin=stdin,
                opts=opts,
            )
        return command.local.Command(
            name,
            create=shlex.join(argv),
            delete=shlex.join(delete) if delete else None,
            triggers=triggers,
            stdin=stdin,
            opts=opts,
        )

    def _connection(self) -> command.remote.ConnectionArgs:
        ssh = self._args.host.ssh
        assert ssh is not None
        return command.remote.ConnectionArgs(
            host=ssh.address,
            port=ssh.port,
            user=ssh.user,
            private_key=self._args.ssh_private_key,
            host_key=ssh.host_key,
        )

    def _prefetch(self, model: ModelConfig, step: str) -> None:
        host, p = self._args.host, self._args.provisioning
        source = model.weights_source()
        if source.startswith("s3://"):
            bucket, _, prefix = source.removeprefix("s3://").partition("/")
            args = ["--bucket", bucket, "--prefix", prefix, "--dest", snapshot_dir(host.model_cache_path, model)]
            if model.s3_endpoint_url:
                args += ["--endpoint-url", model.s3_endpoint_url]
            if model.s3_region:
                args += ["--region", model.s3_region]
            creds = self._args.s3_credentials or pulumi.Output.secret("")
            self._step(
                step,
                "s3_sync.py",
                args,
                stdin=creds,
                interpreter=f"{p.tools_venv}/bin/python",
                source=S3_SYNC.read_text(),
            )
        else:
            repo, _, revision = source.removeprefix("hf://").partition("@")
            token = self._args.hf_token or pulumi.Output.secret("")
            self._step(step, "prefetch-hf.sh", [repo, revision, host.model_cache_path, p.tools_venv], stdin=token)


def s3_credentials(access_key_id: pulumi.Output[str], secret_access_key: pulumi.Output[str]) -> pulumi.Output[str]:
    return pulumi.Output.secret(
        pulumi.Output.all(access_key_id, secret_access_key).apply(
            lambda keys: json.dumps({"aws_access_key_id": keys[0], "aws_secret_access_key": keys[1]})
        )
    )
